"""``tidings bench chat``: a hook-heavy chat, every message through a Python hook.

The bench starts ``tidings serve --hooks tidings.bench.chat_hooks`` pinned to one CPU. ``S``
sender connections and ``R`` readers join one room over ``/ws``; each sender sends ``M``
messages, each ``on_message`` hook publishes it with ``conn.broadcast_channel`` (so every
reader and every other sender gets it). ``--mode async`` runs an ``async def`` hook, ``plain``
a ``def`` hook in the thread pool, ``none`` no hook at all: the room's namespace publishes
what clients send (``simple_publish``), the path without Python of the application's.

Senders send in rounds of ``--window`` messages each and wait until the readers have it all,
so no connection has more messages waiting than the server lets queue. Figures: messages/s
through the server, deliveries/s, and server CPU per message.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path

from .loadgen import Totals, close_all, connect_subscribers, frame_size, make_message
from .peers import (
    BenchError,
    Target,
    cpu_seconds,
    raise_open_files,
    start_tidings,
    subscriber_count,
    wait_ready,
)

__all__ = ["CONFIG", "add_arguments", "masked_frame", "run_chat"]

CONFIG = """\
[namespaces.direct]
simple_subscribe = true
simple_publish = true
"""


def masked_frame(payload: bytes) -> bytes:
    """A client text frame; the all-zero mask leaves the payload as it is (RFC 6455 §5.3)."""
    size = len(payload)
    head = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0xFE]) + size.to_bytes(2)
    return head + b"\0\0\0\0" + payload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["async", "plain", "none"], default="async")
    parser.add_argument("-s", "--senders", type=int, default=4, help="sending connections (4)")
    parser.add_argument("-r", "--readers", type=int, default=100, help="reading connections")
    parser.add_argument("-m", "--messages", type=int, default=2000, help="per sender (2000)")
    parser.add_argument("--size", type=int, default=100, help="message size in bytes (100)")
    parser.add_argument("--window", type=int, default=32, help="messages per sender a round")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0)


def run_chat(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except BenchError as exc:
        print(f"tidings bench chat: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace) -> int:
    raise_open_files(args.senders + args.readers + 64)
    room = {"async": "async-room", "plain": "plain-room", "none": "direct:room"}[args.mode]
    with tempfile.TemporaryDirectory(prefix="tidings-bench-chat-") as tmp:
        config = Path(tmp) / "tidings.toml"
        config.write_text(CONFIG)
        target = start_tidings(
            room,
            secrets.token_hex(16),
            args.senders + args.readers,
            args.server_cpu,
            args=("--hooks", "tidings.bench.chat_hooks", "--config", str(config)),
            env={"TIDINGS_CLIENT_COMMAND_RATE": "0"},
        )
        try:
            await wait_ready(target)
            return await _chat(args, target, room)
        finally:
            target.stop()


async def _chat(args: argparse.Namespace, target: Target, room: str) -> int:
    host, port, pid = target.host, target.port, target.pid
    path = f"/ws/{room}?format=raw"
    readers_total, senders_total = Totals(), Totals()
    readers = await connect_subscribers(host, port, path, args.readers, 0, readers_total)
    senders = await connect_subscribers(host, port, path, args.senders, 0, senders_total)
    frame = frame_size(args.size)
    messages = args.senders * args.messages
    try:
        deadline = time.monotonic() + args.timeout
        while await subscriber_count(target) < args.readers + args.senders:
            if time.monotonic() > deadline:
                raise BenchError("the connections did not all subscribe")
            await asyncio.sleep(0.05)
        cpu0 = cpu_seconds(pid) if pid else 0.0
        start = time.perf_counter()
        sent = 0
        seq = 0
        while sent < args.messages:
            batch = min(args.window, args.messages - sent)
            done = readers_total.expect(batch * args.senders * args.readers * frame)
            for sender in senders:
                assert sender.transport is not None
                chunk = []
                for _ in range(batch):
                    chunk.append(masked_frame(make_message(seq, args.size)))
                    seq += 1
                sender.transport.write(b"".join(chunk))
            sent += batch
            try:
                await asyncio.wait_for(done.wait(), args.timeout)
            except TimeoutError:
                gone = sum(1 for s in [*readers, *senders] if s.gone)
                raise BenchError(f"messages stopped arriving ({gone} connections closed)") from None
        elapsed = time.perf_counter() - start
        cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    finally:
        await close_all([*readers, *senders])
    deliveries = messages * (args.readers + args.senders - 1)
    print(f"mode {args.mode}: {args.senders} senders, {args.readers} readers, {messages} messages")
    print(f"  {messages / elapsed:,.0f} messages/s, {deliveries / elapsed:,.0f} deliveries/s")
    if pid:
        print(f"  server CPU {cpu:.2f} s: {cpu / messages * 1e6:.1f} µs per message")
    return 0
