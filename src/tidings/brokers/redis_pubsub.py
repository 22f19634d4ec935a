"""PUB/SUB on a few connections: every channel of a node multiplexed, checked for liveness.

A ``PubSub`` owns one RESP connection to one Redis server in subscribed mode. Names are
subscribed in batches (one SUBSCRIBE for everything asked in the same loop iteration); a
subscribe returns once Redis confirmed it, which is when its deliveries are live. Redis
PUB/SUB gives no delivery guarantee, so the connection is watched: a PING goes out every
``interval`` seconds, and a connection that stays silent for three intervals — a hung
server or a message loop that stopped — is dropped like a closed one. After a loss the
connection is made again with backoff, every name resubscribed, and ``on_restored`` called
with them, so the broker can have its node compare each channel with its stream and fill
what was missed (or say it can't).

Parsing is hiredis's; messages are dispatched as bytes arrive, with no task per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import hiredis
from redis.crc import key_slot

from tidings.exceptions import BrokerUnavailable
from tidings.protocol.resp import encode_command

__all__ = ["BATCH", "Endpoint", "PubSub", "hello_commands", "open_endpoint"]

log = logging.getLogger("tidings.redis")

BATCH = 512  # names per (S)SUBSCRIBE command

_P = TypeVar("_P", bound=asyncio.Protocol)

# (route, channel, payload): the route is the subscribed name (a pattern for PSUBSCRIBE).
OnMessage = Callable[[bytes, bytes, bytes], None]


@dataclass(slots=True)
class Endpoint:
    """Where and how to reach one Redis server."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ssl: ssl.SSLContext | None = None
    connect_timeout: float = 5.0
    name: str = "tidings"
    # Called before each connection attempt (Sentinel: ask who the master is now).
    resolve: Callable[[], Any] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


async def open_endpoint(ep: Endpoint, factory: Callable[[], _P]) -> _P:
    """Connect to ``ep`` (asking Sentinel first where it resolves), within the caller's
    timeout; the protocol ``factory`` made."""
    if ep.resolve is not None:
        await ep.resolve()
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(factory, ep.host, ep.port, ssl=ep.ssl)
    return proto


def hello_commands(ep: Endpoint) -> list[bytes]:
    """What a new connection to ``ep`` sends first: AUTH when it has credentials, then its
    name (shown by ``CLIENT LIST``). Each has one reply."""
    hello: list[bytes] = []
    if ep.password is not None:
        user = (ep.username,) if ep.username else ()
        hello.append(encode_command("AUTH", *user, ep.password))
    hello.append(encode_command("CLIENT", "SETNAME", ep.name))
    return hello


class _Pending:
    __slots__ = ("future", "kind", "remaining")

    def __init__(self, kind: bytes, remaining: int, future: asyncio.Future[None] | None) -> None:
        self.kind = kind
        self.remaining = remaining
        self.future = future


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PubSub) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.owner.heard = time.monotonic()
        reader = self.reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                self.owner._reply(self, reply)
        except hiredis.ProtocolError as exc:
            log.warning("redis %s: bad reply: %s", self.owner.endpoint.address, exc)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.owner._lost(self)


class PubSub:
    """One subscribed-mode connection; ``on_message`` for every message."""

    def __init__(
        self,
        endpoint: Endpoint,
        on_message: OnMessage,
        *,
        on_restored: Callable[[list[bytes]], None] | None = None,
        on_dropped: Callable[[bytes], None] | None = None,
        interval: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.endpoint = endpoint
        self.on_message = on_message
        self.on_restored = on_restored
        self.on_dropped = on_dropped  # the server unsubscribed a name (slot moved)
        self.interval = interval
        self.timeout = timeout
        self.names: dict[bytes, bytes] = {}  # name → how: SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE
        self.heard = 0.0
        self.error = "not connected"  # why it is unusable; "" when live
        self._proto: _Protocol | None = None
        self._pending: deque[_Pending] = deque()
        self._up = asyncio.Event()
        # To subscribe soon, by name: (how, waiters).
        self._queued: dict[bytes, tuple[bytes, list[asyncio.Future[None]]]] = {}
        self._flush: asyncio.Handle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._restore: list[bytes] = []

    # lifecycle
    async def start(self) -> None:
        """Connect; the first connection must succeed (``BrokerUnavailable`` otherwise)."""
        await self._connect()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._fail_pending(BrokerUnavailable("closed"))

    @property
    def live(self) -> bool:
        return self._up.is_set()

    async def _connect(self) -> None:
        ep = self.endpoint
        try:
            async with asyncio.timeout(ep.connect_timeout):
                proto = await open_endpoint(ep, lambda: _Protocol(self))
                self._proto = proto
                self.heard = time.monotonic()
                hello = hello_commands(ep)
                waits = [self._expect(b"", 1) for _ in hello]
                assert proto.transport is not None
                proto.transport.write(b"".join(hello))
                await asyncio.gather(*waits)
                names = list(self.names)
                await self._send_subscribe(names)
        except (OSError, TimeoutError, BrokerUnavailable) as exc:
            reason = f"redis {ep.address}: {exc or type(exc).__name__}"
            self.error = reason
            if self._proto is not None and self._proto.transport is not None:
                self._proto.transport.abort()
            raise BrokerUnavailable(reason) from None
        self.error = ""
        self._up.set()
        self._restore = names

    def _expect(self, kind: bytes, count: int) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(kind, count, future))
        return future

    async def _run(self) -> None:
        """Watch the live connection; make it again when lost."""
        backoff = 0.05
        while not self._closed:
            if self._restore and self.on_restored is not None:
                restored, self._restore = self._restore, []
                self.on_restored(restored)
            proto = self._proto
            assert proto is not None
            while not proto.lost.done():
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation that comes with the result (CPython gh-86296).
                    async with asyncio.timeout(self.interval):
                        await asyncio.shield(proto.lost)
                except TimeoutError:
                    silent = time.monotonic() - self.heard
                    if silent > 3 * self.interval:
                        log.warning(
                            "redis %s: no answer for %.1f s; reconnecting",
                            self.endpoint.address,
                            silent,
                        )
                        assert proto.transport is not None
                        proto.transport.abort()
                        break
                    self._ping()
            await proto.lost
            while not self._closed:
                delay = backoff * (0.5 + random.random())
                backoff = min(backoff * 2, 2.0)
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
                try:
                    await self._connect()
                except BrokerUnavailable as exc:
                    log.warning("%s; retrying", exc)
                    continue
                log.info("redis %s: PUB/SUB connection restored", self.endpoint.address)
                backoff = 0.05
                break

    def _ping(self) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None and self.live:
            self._pending.append(_Pending(b"pong", 1, None))
            proto.transport.write(encode_command("PING"))

    def _lost(self, proto: _Protocol) -> None:
        if proto is not self._proto:
            return
        if self.live and not self._closed:
            log.warning("redis %s: PUB/SUB connection lost", self.endpoint.address)
        self._up.clear()
        self.error = f"redis {self.endpoint.address}: connection lost"
        self._fail_pending(BrokerUnavailable(self.error))

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, deque()
        for item in pending:
            if item.future is not None and not item.future.done():
                item.future.set_exception(exc)
                item.future.exception()  # retrieved: a waiter may have gone
        queued, self._queued = self._queued, {}
        for _, futures in queued.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()

    # replies
    def _reply(self, proto: _Protocol, reply: Any) -> None:
        if isinstance(reply, list) and reply:
            kind = reply[0]
            if kind in (b"message", b"smessage"):
                self.on_message(reply[1], reply[1], reply[2])
                return
            if kind == b"pmessage":
                self.on_message(reply[1], reply[2], reply[3])
                return
            if kind == b"sunsubscribe" and not self._heads(kind):
                # Unasked: the server dropped it (a Cluster slot moved).
                name = reply[1]
                if self.names.pop(name, None) is not None and self.on_dropped is not None:
                    self.on_dropped(name)
                return
        head = self._pending[0] if self._pending else None
        if head is None:
            log.warning("redis %s: unexpected reply %r", self.endpoint.address, reply)
            return
        if isinstance(reply, hiredis.ReplyError):
            self._pending.popleft()
            if head.future is not None and not head.future.done():
                head.future.set_exception(BrokerUnavailable(f"redis: {reply}"))
            return
        head.remaining -= 1
        if head.remaining <= 0:
            self._pending.popleft()
            if head.future is not None and not head.future.done():
                head.future.set_result(None)

    def _heads(self, kind: bytes) -> bool:
        return bool(self._pending) and self._pending[0].kind == kind

    # subscribing
    async def subscribe(self, name: bytes, how: bytes = b"subscribe") -> None:
        """Receive ``name``'s messages (``how``: subscribe, psubscribe or ssubscribe);
        returns once Redis confirmed it. Names asked for in one loop iteration go out in
        one command."""
        self.names[name] = how
        future = asyncio.get_running_loop().create_future()
        entry = self._queued.setdefault(name, (how, []))
        entry[1].append(future)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._send_queued)
        wait = self.timeout + self.endpoint.connect_timeout
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(future)
        except TimeoutError:
            self.names.pop(name, None)
            raise BrokerUnavailable(f"redis {self.endpoint.address}: subscribe timed out") from None
        except BaseException:
            self.names.pop(name, None)
            raise

    async def _wait_up(self) -> None:
        if not self.live:
            try:
                async with asyncio.timeout(self.endpoint.connect_timeout):
                    await self._up.wait()
            except TimeoutError:
                raise BrokerUnavailable(self.error) from None

    def _send_queued(self) -> None:
        self._flush = None
        if not self.live:
            # Kept: sent once the connection is back.
            asyncio.get_running_loop().create_task(self._send_when_up())
            return
        queued, self._queued = self._queued, {}
        by_how: dict[bytes, list[bytes]] = {}
        for name, (how, _) in queued.items():
            by_how.setdefault(how, []).append(name)
        done = asyncio.ensure_future(
            asyncio.gather(*(self._send(names, how) for how, names in by_how.items()))
        )

        def settle(task: asyncio.Future[Any]) -> None:
            exc = None if task.cancelled() else task.exception()
            for _, futures in queued.values():
                for future in futures:
                    if future.done():
                        continue
                    if exc is None:
                        future.set_result(None)
                    else:
                        future.set_exception(exc)
                        future.exception()

        done.add_done_callback(settle)

    async def _send_when_up(self) -> None:
        try:
            await self._wait_up()
        except BrokerUnavailable:
            return  # the waiters time out
        if self._queued and self._flush is None:
            self._send_queued()

    async def _send_subscribe(self, names: list[bytes]) -> None:
        """Subscribe ``names`` again on a fresh connection."""
        by_how: dict[bytes, list[bytes]] = {}
        for name in names:
            by_how.setdefault(self.names[name], []).append(name)
        await asyncio.gather(*(self._send(group, how) for how, group in by_how.items()))

    async def _send(self, names: Iterable[bytes], kind: bytes) -> None:
        names = list(names)
        if not names:
            return
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            raise BrokerUnavailable(self.error or "not connected")
        groups: dict[int, list[bytes]] = {}
        if kind in (b"ssubscribe", b"sunsubscribe"):
            # SSUBSCRIBE/SUNSUBSCRIBE take names of one slot only.
            for name in names:
                groups.setdefault(key_slot(name), []).append(name)
        else:
            groups[0] = names
        waits = []
        out = []
        for group in groups.values():
            for start in range(0, len(group), BATCH):
                chunk = group[start : start + BATCH]
                out.append(encode_command(kind, *chunk))
                waits.append(self._expect(kind, len(chunk)))
        proto.transport.write(b"".join(out))
        await asyncio.gather(*waits)

    async def unsubscribe(self, name: bytes) -> None:
        """Stop receiving ``name``; a lost connection has stopped it already."""
        how = self.names.pop(name, None)
        if how is None or not self.live:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._send([name], how[:-9] + b"unsubscribe")
        except (TimeoutError, BrokerUnavailable) as exc:
            log.warning("redis %s: unsubscribe %r: %s", self.endpoint.address, name, exc)
