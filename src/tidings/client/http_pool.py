"""The asyncio Publisher's HTTP/1.1 client: a few keep-alive connections, pipelined.

A Publisher with many publishes in flight (``asyncio.gather`` in a task, a burst from a
view) spends its time in the client, not the server: a general client's pool makes a
request wait for a free connection and handles each one through several layers. Here
requests go out on at most ``connections`` connections, each carrying up to ``depth``
requests at once (HTTP/1.1 pipelining, RFC 9112 §9.3.2: the answers come back in request
order, which is the order of the futures they resolve). What a loop iteration asks of one
connection leaves in one write.

Responses are read by ``protocol.http_response`` (pure Python: the Publisher needs no
server dependency). A connection the server closes, a reset or a reply
that takes longer than ``timeout`` fails the requests in flight on it with
``PoolError`` (they may or may not have reached the server: the Publisher retries only
what an idempotency key makes safe) and the next request opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from typing import cast
from urllib.parse import urlsplit

from tidings.protocol.http_response import ParsedResponse, ResponseReader

__all__ = ["HttpPool", "PoolError"]


class PoolError(Exception):
    """The request got no answer. ``timeout``: none came in time; ``tls``: the TLS
    handshake failed (it would again); otherwise the connection failed or closed."""

    def __init__(self, detail: str, *, timeout: bool = False, tls: bool = False) -> None:
        super().__init__(detail)
        self.timeout = timeout
        self.tls = tls


class _Connection(asyncio.Protocol):
    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.waiting: deque[tuple[asyncio.Future[ParsedResponse], float]] = deque()
        self.lost = False
        self.last = False  # the server said Connection: close

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            responses = self.reader.feed(data)
        except ValueError as exc:
            self.drop(f"bad response: {exc}")
            return
        for response in responses:
            if not self.waiting:
                self.drop("a response to nothing asked")
                return
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_result(response)
            if not response.keep_alive:
                self.last = True
        if self.last and not self.waiting:
            self.drop("closed by the server")
        elif responses:
            self.pool._wake(len(responses))

    def connection_lost(self, exc: Exception | None) -> None:
        self.drop(f"connection closed{f': {exc}' if exc else ''}")

    def send(self, data: bytes, future: asyncio.Future[ParsedResponse]) -> None:
        assert self.transport is not None
        self.waiting.append((future, time.monotonic()))
        self.transport.write(data)

    def drop(self, why: str) -> None:
        if self.lost:
            return
        self.lost = True
        waiting, self.waiting = self.waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(PoolError(why))
                future.exception()  # retrieved: its caller may have gone
        if self.transport is not None:
            self.transport.abort()
        self.pool._forget(self)


class HttpPool:
    """Keep-alive connections to the server of ``base_url``, for one event loop."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        verify: ssl.SSLContext | str | bool = True,
        connections: int = 4,
        depth: int = 16,
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc.rpartition("@")[2].encode()
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.context = _context(verify) if self.tls else None
        self.connections = connections
        self.depth = depth
        self._open: list[_Connection] = []
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()  # requests waiting for room
        self._watch: asyncio.TimerHandle | None = None
        self._closed = False

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> ParsedResponse:
        """``POST`` ``path`` (after the base URL's own path) with ``body``."""
        lines = [b"POST %s HTTP/1.1" % (self.prefix + path).encode(), b"Host: " + self.host_header]
        lines += [f"{name}: {value}".encode("latin-1") for name, value in headers.items()]
        lines.append(b"Content-Length: %d" % len(body))
        request = b"\r\n".join(lines) + b"\r\n\r\n" + body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                conn = await self._connection()
                future: asyncio.Future[ParsedResponse] = loop.create_future()
                conn.send(request, future)
                self._arm()
                return await future
        except TimeoutError:
            raise PoolError(f"no answer within {self.timeout:g} s", timeout=True) from None

    async def _connection(self) -> _Connection:
        """The open connection with the fewest requests in flight, a new one while there are
        fewer than ``connections`` and all are busy, or wait for room."""
        while True:
            if self._closed:
                raise PoolError("the publisher is closed")
            usable = [c for c in self._open if not c.last]
            best = min(usable, key=lambda c: len(c.waiting), default=None)
            busy = best is None or bool(best.waiting)
            if busy and len(self._open) + self._opening < self.connections:
                return await self._connect()
            if best is not None and len(best.waiting) < self.depth:
                return best
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        self._opening += 1
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self),
                self.host,
                self.port,
                ssl=self.context,
                server_hostname=self.host if self.tls else None,
            )
        except ssl.SSLError as exc:
            raise PoolError(f"TLS: {exc.reason or exc}", tls=True) from None
        except OSError as exc:
            detail = f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
            raise PoolError(detail or type(exc).__name__) from None
        finally:
            self._opening -= 1
        self._open.append(conn)
        return conn

    def _forget(self, conn: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self._open.remove(conn)
        self._wake(len(self._waiters))  # room for a new connection: all look again

    def _wake(self, count: int) -> None:
        """Let ``count`` requests waiting for room look again."""
        waiters = self._waiters
        while count > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _arm(self) -> None:
        if self._watch is None:
            loop = asyncio.get_running_loop()
            self._watch = loop.call_later(min(1.0, self.timeout / 4), self._check)

    def _check(self) -> None:
        """Drop a connection whose oldest request is overdue; wake waiters for room."""
        self._watch = None
        now = time.monotonic()
        for conn in list(self._open):
            if conn.waiting and now - conn.waiting[0][1] > self.timeout:
                conn.drop(f"no answer within {self.timeout:g} s")
        if any(conn.waiting for conn in self._open):
            self._arm()

    async def aclose(self) -> None:
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for conn in list(self._open):
            conn.drop("closed")
        self._wake(len(self._waiters))


def _context(verify: ssl.SSLContext | str | bool) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    else:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context
