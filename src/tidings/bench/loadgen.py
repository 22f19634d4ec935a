"""The load generator of ``tidings bench fanout``: subscribers that count bytes, a few that
parse timestamps, and keep-alive HTTP publishers.

Reading is what a load client spends its time on, so almost every subscriber reads into one
large shared buffer and only adds up byte counts (deliveries = bytes / frame size); a few
sampled subscribers parse their frames and read the publish time stamped in each message.
Nothing here makes a coroutine per connection once the connections are open.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import cast

__all__ = [
    "MAX_HEAD",
    "READ_BUFFER",
    "FanPublisher",
    "Progress",
    "PublishDriver",
    "Publisher",
    "SampledSubscriber",
    "Subscriber",
    "Totals",
    "close_all",
    "connect_subscribers",
    "frame_size",
    "make_message",
    "post_request",
    "set_read_batch",
]

READ_BUFFER = 1 << 18  # what one read may take; shared by every counting subscriber
MAX_HEAD = 16384


def frame_size(payload: int) -> int:
    """Bytes of an unmasked server frame carrying ``payload`` bytes (RFC 6455 §5.2)."""
    if payload < 126:
        return 2 + payload
    if payload < 65536:
        return 4 + payload
    return 10 + payload


def make_message(seq: int, size: int) -> bytes:
    """A JSON message of exactly ``size`` bytes carrying the publish time in ns (``t``)."""
    head = b'{"t":%d,"i":%d,"p":"' % (time.perf_counter_ns(), seq)
    pad = size - len(head) - 2
    if pad < 0:
        raise ValueError(f"messages of {size} bytes can't hold a timestamp; use 64 or more")
    return head + b"x" * pad + b'"}'


_STAMP = re.compile(rb'"t":(\d+)')


class Totals:
    """Bytes counted over every subscriber; ``done`` is set once ``target`` is reached."""

    __slots__ = ("bytes", "done", "last", "latencies", "target")

    def __init__(self) -> None:
        self.bytes = 0
        self.target = 0
        self.last = 0  # perf_counter_ns() of the latest read
        self.done: asyncio.Event | None = None
        self.latencies: list[int] = []  # ns, from the sampled subscribers

    def expect(self, more: int) -> asyncio.Event:
        """Arm a new target ``more`` bytes past what has been counted."""
        self.target = self.bytes + more
        self.done = asyncio.Event()
        self.latencies = []
        return self.done


class Subscriber(asyncio.BufferedProtocol):
    """One WebSocket subscriber that only counts what it reads after the handshake."""

    __slots__ = ("_head", "_shared", "error", "gone", "ready", "received", "totals", "transport")

    def __init__(self, totals: Totals, shared: memoryview, ready: asyncio.Future[None]) -> None:
        self.totals = totals
        self._shared = shared
        self.ready = ready
        self._head: bytearray | None = bytearray()
        self.received = 0
        self.transport: asyncio.Transport | None = None
        self.error = ""
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._shared

    def buffer_updated(self, nbytes: int) -> None:
        if self._head is not None:
            self._handshake(nbytes)
            return
        self._count(nbytes)

    def _count(self, nbytes: int) -> None:
        self.received += nbytes
        totals = self.totals
        total = totals.bytes = totals.bytes + nbytes
        totals.last = time.perf_counter_ns()
        if total >= totals.target and totals.done is not None and not totals.done.is_set():
            totals.done.set()

    def _handshake(self, nbytes: int) -> None:
        head = self._head
        assert head is not None
        start = len(head)
        head += self._shared[:nbytes]
        end = head.find(b"\r\n\r\n", max(0, start - 3))
        if end < 0:
            if len(head) > MAX_HEAD:
                self._fail("response head too large")
            return
        status = bytes(head[: head.find(b"\r\n")])
        if not status.startswith(b"HTTP/1.1 101"):
            self._fail(f"handshake refused: {status.decode('latin-1')}")
            return
        rest = bytes(head[end + 4 :])
        self._head = None
        if not self.ready.done():
            self.ready.set_result(None)
        if rest:
            self.take(rest)

    def take(self, data: bytes) -> None:
        """Frame bytes that arrived with the handshake response."""
        self._count(len(data))

    def _fail(self, reason: str) -> None:
        self.error = reason
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(str(exc or "connection closed")))
        elif not self.error:
            self.error = str(exc) if exc else "closed by the server"


class SampledSubscriber(Subscriber):
    """A subscriber that also parses its frames to measure publish-to-delivery latency."""

    __slots__ = ("_own", "_pending", "frames", "sizes")

    def __init__(self, totals: Totals, shared: memoryview, ready: asyncio.Future[None]) -> None:
        self._own = memoryview(bytearray(READ_BUFFER))
        super().__init__(totals, self._own, ready)
        self._pending = bytearray()
        self.frames = 0
        self.sizes: set[int] = set()  # frame sizes seen: the byte count assumes one size

    def buffer_updated(self, nbytes: int) -> None:
        if self._head is not None:
            self._handshake(nbytes)
            return
        self._count(nbytes)
        self._parse(self._own[:nbytes], time.perf_counter_ns())

    def take(self, data: bytes) -> None:
        self._count(len(data))
        self._parse(memoryview(data), time.perf_counter_ns())

    def _parse(self, data: memoryview, now: int) -> None:
        pending = self._pending
        pending += data
        pos = 0
        end = len(pending)
        latencies = self.totals.latencies
        while end - pos >= 2:
            length = pending[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(pending[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(pending[pos + 2 : pos + 10], "big")
                head = 10
            if end - pos < head + length:
                break
            if pending[pos] & 0x0F in (1, 2):  # text or binary data frame
                self.frames += 1
                self.sizes.add(head + length)
                found = _STAMP.search(pending, pos + head, pos + head + length)
                if found is not None:
                    latencies.append(now - int(found.group(1)))
            pos += head + length
        del pending[:pos]


def _handshake_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class Progress:
    """A plain-text progress bar on standard error, redrawn at most ten times a second."""

    __slots__ = ("_drawn", "label", "total")

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self._drawn = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (now - self._drawn < 0.1 or done >= self.total):
            return
        self._drawn = now
        width = 30
        filled = width * done // max(1, self.total)
        bar = "#" * filled + "." * (width - filled)
        end = "\n" if final else ""
        sys.stderr.write(f"\r  {self.label} [{bar}] {done:,}/{self.total:,}{end}")
        sys.stderr.flush()


async def connect_subscribers(
    host: str,
    port: int | Sequence[int],
    path: str,
    count: int,
    sampled: int,
    totals: Totals,
    *,
    label: str = "connecting",
    concurrency: int = 256,
    handshake_timeout: float = 30.0,
) -> list[Subscriber]:
    """Open ``count`` WebSocket subscribers, at most ``concurrency`` handshakes at a time;
    ``sampled`` of them, spread evenly, parse frames for latency. Given several ports (one
    per node), the subscribers are split over them in equal consecutive blocks, so the
    sampled ones are spread over the nodes too."""
    loop = asyncio.get_running_loop()
    ports = [port] if isinstance(port, int) else list(port)
    shared = memoryview(bytearray(READ_BUFFER))
    every = max(1, count // sampled) if sampled else 0
    subs: list[Subscriber] = []
    gate = asyncio.Semaphore(concurrency)
    progress = Progress(label, count)
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        async with gate:
            ready: asyncio.Future[None] = loop.create_future()
            kind = SampledSubscriber if every and i % every == 0 and i // every < sampled else None
            sub = (kind or Subscriber)(totals, shared, ready)
            subs.append(sub)
            to = ports[i * len(ports) // count]
            transport, _ = await loop.create_connection(lambda: sub, host, to)
            transport.write(_handshake_request(host, to, path))
            await asyncio.wait_for(ready, handshake_timeout)
        done += 1
        progress.update(done)

    tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_all(subs)
        sys.stderr.write("\n")
        raise
    progress.update(done, final=True)
    return subs


def set_read_batch(subs: list[Subscriber], nbytes: int) -> None:
    """Have the kernel wake the counting subscribers only once ``nbytes`` are waiting
    (``SO_RCVLOWAT``, honoured by TCP's poll since Linux 4.19), so a server that writes
    each frame separately doesn't cost the load generator one read per frame. Sampled
    subscribers keep reading at once: their timestamps stay exact. Set it back to 1 to
    collect what is left."""
    for sub in subs:
        if sub.transport is None or isinstance(sub, SampledSubscriber):
            continue
        sock = sub.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, nbytes))


async def close_all(conns: Sequence[Subscriber | Publisher], within: float = 5.0) -> None:
    """Reset every connection (RST: no TIME_WAIT left behind, and the server hears of it
    at once) and wait until the loop has closed them all."""
    linger = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
    for conn in conns:
        transport = conn.transport
        if transport is None or transport.is_closing():
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        transport.abort()
    deadline = time.monotonic() + within
    while any(conn.transport is not None and not conn.gone for conn in conns):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)


_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class Publisher(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection that may carry several pipelined requests."""

    __slots__ = ("_buffer", "errors", "gone", "on_response", "outstanding", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.outstanding = 0
        self.errors: list[str] = []
        self.gone = False
        self.on_response: Callable[[Publisher, int, bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.outstanding += 1
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[: end + 2])
            found = _LENGTH.search(head)
            length = int(found.group(1)) if found else 0
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            try:
                status = int(head[9:12])
            except ValueError:
                status = 0
            self.outstanding -= 1
            if status >= 300 or status < 200:
                self.errors.append(f"{status} {body[:200]!r}")
            if self.on_response is not None:
                self.on_response(self, status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True


class FanPublisher:
    """Sends each request on every one of ``conns`` (one per node of a run whose nodes
    share no broker), and counts it answered once all have answered it."""

    def __init__(self, conns: list[Publisher]) -> None:
        self.conns = conns
        self.on_response: Callable[[FanPublisher, int, bytes], None] | None = None
        self._answers = [0] * len(conns)
        self._statuses: list[int] = []  # the worst status of each request still out
        self._done = 0
        for i, conn in enumerate(conns):
            conn.on_response = self._answered_by(i)

    @property
    def gone(self) -> bool:
        return any(conn.gone for conn in self.conns)

    def send(self, request: bytes) -> None:
        self._statuses.append(200)
        for conn in self.conns:
            conn.send(request)

    def _answered_by(self, i: int) -> Callable[[Publisher, int, bytes], None]:
        def answered(conn: Publisher, status: int, body: bytes) -> None:
            # Each connection answers in request order: its n-th answer is request n's.
            n = self._answers[i] - self._done
            self._answers[i] += 1
            if not 200 <= status < 300:
                self._statuses[n] = status
            while min(self._answers) > self._done:
                self._done += 1
                worst = self._statuses.pop(0)
                if self.on_response is not None:
                    self.on_response(self, worst, body)

        return answered


def post_request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class PublishDriver:
    """Publishes ``count`` messages over ``publishers``, with callbacks rather than tasks.

    Unpaced (``rate`` None), every connection keeps ``depth`` requests in flight, so the
    server always has work queued. Paced, messages leave at ``rate`` per second whatever
    the answers, round-robin over the connections (pipelined when one is still busy).
    """

    def __init__(
        self,
        publishers: Sequence[Publisher | FanPublisher],
        request: Callable[[int], bytes],
        count: int,
        *,
        rate: float | None = None,
        depth: int = 1,
    ) -> None:
        self.publishers = publishers
        self.request = request
        self.count = count
        self.rate = rate
        self.depth = depth
        self.sent = 0
        self.answered = 0
        self.started = 0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next = 0

    def start(self) -> None:
        self.started = time.perf_counter_ns()
        for pub in self.publishers:
            pub.on_response = self._answered
        if self.count == 0:
            self.finished.set_result(None)
        elif self.rate is None:
            for _ in range(self.depth):
                for pub in self.publishers:
                    self._send(pub)
        else:
            self._tick()

    def _send(self, pub: Publisher | FanPublisher) -> None:
        if self.sent < self.count and not pub.gone:
            pub.send(self.request(self.sent))
            self.sent += 1

    def _answered(self, pub: Publisher | FanPublisher, status: int, body: bytes) -> None:
        self.answered += 1
        if self.answered >= self.count:
            if not self.finished.done():
                self.finished.set_result(None)
        elif self.rate is None:
            self._send(pub)

    def _tick(self) -> None:
        assert self.rate is not None
        elapsed = (time.perf_counter_ns() - self.started) / 1e9
        due = min(self.count, int(elapsed * self.rate) + 1) - self.sent
        pubs = self.publishers
        for _ in range(due):
            self._send(pubs[self._next % len(pubs)])
            self._next += 1
        if self.sent < self.count:
            asyncio.get_running_loop().call_later(max(0.001, min(0.01, 1 / self.rate)), self._tick)

    def stop(self) -> None:
        for pub in self.publishers:
            pub.on_response = None
