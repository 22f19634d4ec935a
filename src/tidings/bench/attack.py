"""``tidings bench attack``: hold a server under resource-exhaustion attacks and measure it.

The bench starts ``tidings serve`` (default configuration, a free loopback port) pinned to
one CPU and, from this process pinned to another, holds against it at once:

- ``--slowloris`` connections, each trickling a request a byte at a time and opening a new
  one whenever the server ends it (408);
- ``--pipeliners`` connections, each sending pipelined ``GET /health`` requests and never
  reading an answer (a small receive buffer);
- ``--stalled`` WebSocket subscribers that never read, on a channel a flood publisher fills
  with 1 KiB messages, each reconnecting when the server cuts it off as slow.

Meanwhile a normal WebSocket subscriber gets ``--rate`` messages a second on another channel,
and the bench reports the server's RSS (before, peak, after) and that client's
publish-to-delivery latency before and during the attack. Everything targets 127.0.0.1 and
stops after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .peers import BenchError, Target, raise_open_files, rss_kib, start_tidings, wait_ready

__all__ = [
    "HEALTH",
    "Attack",
    "Run",
    "add_arguments",
    "run_attack",
]

HEALTH = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--slowloris", type=int, default=1000, help="trickling connections (1000)")
    add("--pipeliners", type=int, default=1000, help="non-reading pipelining connections")
    add("--stalled", type=int, default=1000, help="non-reading WebSocket subscribers")
    add("--seconds", type=float, default=20.0, help="how long the attack is held (20)")
    add("--rate", type=float, default=20.0, help="messages/s to the normal client (20)")
    add("--server-cpu", type=int, default=0, help="CPU for the server (0)")
    add("--client-cpu", type=int, default=1, help="CPU for this load generator (1)")
    add("--json", dest="json_path", help="also write the results as JSON to this file")


@dataclass
class Attack:
    """What one run measured."""

    slowloris: int
    pipeliners: int
    stalled: int
    seconds: float
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    rss_after_kib: int = 0
    latency_before_ms: list[float] = field(default_factory=list)  # p50, p99
    latency_during_ms: list[float] = field(default_factory=list)
    delivered_during: int = 0
    sent_during: int = 0
    timeouts_408: int = 0
    slow_disconnects: int = 0
    reconnects: int = 0


async def _connect(port: int) -> socket.socket:
    """A raw socket with a small receive buffer: what the server sends piles up on its side."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def _state(sock: socket.socket) -> str:
    """``"quiet"``, ``"answered"`` (bytes wait, unread) or ``"gone"``, without reading."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "quiet"
    except OSError:
        return "gone"
    return "answered" if data else "gone"


def _handshake(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class Run:
    def __init__(self, target: Target, api_key: str, result: Attack, rate: float) -> None:
        self.target = target
        self.api_key = api_key
        self.result = result
        self.rate = rate
        self.stop = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def slowloris(self) -> None:
        """A byte a second; a new connection whenever the server answers or closes."""
        while not self.stop.is_set():
            try:
                sock = await _connect(self.target.port)
            except OSError:
                await self._pause(1.0)
                continue
            try:
                for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100_000:
                    state = _state(sock)
                    if state != "quiet" or self.stop.is_set():
                        self.result.timeouts_408 += state == "answered"
                        break
                    await self.loop.sock_sendall(sock, bytes([byte]))
                    await self._pause(1.0)
            except OSError:
                pass
            finally:
                sock.close()
            self.result.reconnects += 1

    async def pipeliner(self) -> None:
        """Pipelined requests, answers never read."""
        while not self.stop.is_set():
            try:
                sock = await _connect(self.target.port)
            except OSError:
                await self._pause(0.5)
                continue
            try:
                while not self.stop.is_set():
                    # Blocks once the server stops reading this connection.
                    await self.loop.sock_sendall(sock, HEALTH * 2000)
            except OSError:
                self.result.reconnects += 1
            finally:
                sock.close()

    async def stalled_subscriber(self) -> None:
        """A WebSocket subscriber of the flooded channel that never reads its frames."""
        while not self.stop.is_set():
            try:
                sock = await _connect(self.target.port)
                await self.loop.sock_sendall(sock, _handshake("/ws/flood?format=raw"))
            except OSError:
                await self._pause(0.5)
                continue
            try:
                while not self.stop.is_set() and _state(sock) != "gone":
                    await self._pause(1.0)
            finally:
                sock.close()
            self.result.reconnects += 1

    async def publish(
        self, writer: Any, reader: asyncio.StreamReader, channel: str, body: bytes
    ) -> None:
        head = (
            f"POST /pub/{channel} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {self.api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        response = await reader.readuntil(b"\r\n\r\n")
        length = int(response.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)

    async def flood(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.target.port)
        body = json.dumps({"pad": "x" * 1000}).encode()
        while not self.stop.is_set():
            await self.publish(writer, reader, "flood", body)
            await asyncio.sleep(0.005)
        writer.close()

    async def measure_latency(self, seconds: float) -> tuple[list[float], int, int]:
        """A normal subscriber and publisher: latencies (ms) of what arrived in time."""
        port = self.target.port
        sub_reader, sub_writer = await asyncio.open_connection("127.0.0.1", port)
        sub_writer.write(_handshake("/ws/normal?format=raw"))
        await sub_reader.readuntil(b"\r\n\r\n")
        pub_reader, pub_writer = await asyncio.open_connection("127.0.0.1", port)
        latencies: list[float] = []
        sent = 0

        async def receive() -> None:
            while True:
                head = await sub_reader.readexactly(2)
                length = head[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(await sub_reader.readexactly(2), "big")
                payload = await sub_reader.readexactly(length)
                if head[0] & 0x0F == 0x1:
                    sent_at = json.loads(payload)["t"]
                    latencies.append((time.perf_counter_ns() - sent_at) / 1e6)

        receiving = asyncio.ensure_future(receive())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            body = json.dumps({"t": time.perf_counter_ns()}).encode()
            await asyncio.wait_for(self.publish(pub_writer, pub_reader, "normal", body), 30)
            sent += 1
            await asyncio.sleep(1 / self.rate)
        await asyncio.sleep(1.0)  # what is in flight arrives (or is counted lost)
        receiving.cancel()
        sub_writer.close()
        pub_writer.close()
        return latencies, len(latencies), sent


def _percentiles(values: list[float]) -> list[float]:
    if not values:
        return []
    ordered = sorted(values)
    return [
        round(statistics.median(ordered), 2),
        round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    ]


async def _run(args: argparse.Namespace) -> Attack:
    api_key = secrets.token_urlsafe(12)
    total = args.slowloris + args.pipeliners + args.stalled
    target = start_tidings("flood", api_key, total + 512, args.server_cpu)
    result = Attack(args.slowloris, args.pipeliners, args.stalled, args.seconds)
    try:
        await wait_ready(target)
        assert target.pid is not None
        run = Run(target, api_key, result, args.rate)
        result.rss_before_kib = rss_kib(target.pid)
        before, _, _ = await run.measure_latency(3.0)
        result.latency_before_ms = _percentiles(before)
        tasks = [asyncio.ensure_future(run.slowloris()) for _ in range(args.slowloris)]
        tasks += [asyncio.ensure_future(run.pipeliner()) for _ in range(args.pipeliners)]
        tasks += [asyncio.ensure_future(run.stalled_subscriber()) for _ in range(args.stalled)]
        tasks.append(asyncio.ensure_future(run.flood()))
        peak = [result.rss_before_kib]

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], rss_kib(target.pid or 0))
                await asyncio.sleep(0.25)

        sampling = asyncio.ensure_future(sample())
        await asyncio.sleep(min(5.0, args.seconds / 4))  # the attack builds up
        during, delivered, sent = await run.measure_latency(args.seconds)
        result.latency_during_ms = _percentiles(during)
        result.delivered_during, result.sent_during = delivered, sent
        run.stop.set()
        sampling.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        result.rss_peak_kib = peak[0]
        result.slow_disconnects = await _slow_count(target, api_key)
        await asyncio.sleep(2.0)
        result.rss_after_kib = rss_kib(target.pid)
        target.check_alive()
    finally:
        target.stop()
    return result


async def _slow_count(target: Target, api_key: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.write(f"GET /stats HTTP/1.1\r\nHost: b\r\nX-API-Key: {api_key}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    stats = json.loads(await reader.readexactly(length))
    writer.close()
    return int(stats["slow_disconnects"])


def run_attack(args: argparse.Namespace) -> int:
    """Run the attack bench; print the figures; 0 when the server stayed up."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.client_cpu})
    try:
        raise_open_files(args.slowloris + args.pipeliners + args.stalled + 64)
        result = asyncio.run(_run(args))
    except BenchError as exc:
        print(f"tidings bench attack: {exc}", file=sys.stderr)
        return 1
    print(
        f"tidings bench attack: {result.slowloris} slowloris, {result.pipeliners} non-reading "
        f"pipeliners, {result.stalled} stalled subscribers for {result.seconds:.0f} s\n"
        f"  server RSS: {result.rss_before_kib / 1024:.1f} MiB before, "
        f"{result.rss_peak_kib / 1024:.1f} MiB peak, {result.rss_after_kib / 1024:.1f} MiB after\n"
        f"  normal client latency p50/p99: {result.latency_before_ms} ms before, "
        f"{result.latency_during_ms} ms during "
        f"({result.delivered_during} of {result.sent_during} delivered)\n"
        f"  408s seen: {result.timeouts_408}, slow disconnects: {result.slow_disconnects}",
        flush=True,
    )
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump({"command": sys.argv, "result": asdict(result)}, fh, indent=2)
    return 0
