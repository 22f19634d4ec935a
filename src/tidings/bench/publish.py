"""``tidings bench publish``: publications per second from one client process.

It starts a redis-server of its own (pinned to the server CPU, as the node is) and a
``tidings serve`` node on it, then publishes M messages with ``Publisher`` — straight into
Redis (``redis://``) and through the node's HTTP API — from one process pinned to the
load generator's CPU, first one at a time (blocking ``publish``), then with C publishes in
flight (``apublish``). It reports publishes/s and Redis' own CPU time per publication
(``INFO cpu``), side by side. ``--peer sqlite`` also measures, through HTTP the same way, a
node on the memory broker and a node with durable history (``--history-path``), and
reports their ratio. Bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from typing import Any

__all__ = ["add_arguments", "run_publish"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tidings bench publish``."""
    add = parser.add_argument
    add("-m", "--messages", type=int, default=20000, help="messages per measurement (20000)")
    add("-c", "--concurrency", type=int, default=256, help="async publishes in flight (256)")
    add("--size", type=int, default=100, help="message size in bytes (100)")
    add("--server-cpu", type=int, default=0, help="CPU for Redis and the node (0)")
    add("--client-cpu", type=int, default=1, help="CPU for the publisher (1)")
    add("--no-pin", action="store_true", help="don't pin processes to CPUs")
    add(
        "--peer",
        action="append",
        choices=["sqlite"],
        default=[],
        help="also publish to a memory-broker node and a durable-history node, for the ratio",
    )
    add("--json", dest="json_path", help="also write the results as JSON to this file")


def _redis_cpu(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _measure(publisher: Any, messages: int, concurrency: int, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    if concurrency <= 1:
        for _ in range(messages):
            await asyncio.to_thread(publisher.publish, "bench", body)
        return messages / (time.perf_counter() - start)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < messages:
            sent += 1
            await publisher.apublish("bench", body)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return messages / (time.perf_counter() - start)


async def _run(
    args: argparse.Namespace, redis_url: str, node_urls: dict[str, str], key: str
) -> dict[str, Any]:
    from tidings import Publisher

    body = {"text": "x" * max(0, args.size - 12)}
    results: dict[str, Any] = {}
    for name, url in (("redis", redis_url), *node_urls.items()):
        publisher = Publisher(url, key)
        on_redis = name in ("redis", "http")
        for mode, concurrency in (("sequential", 1), ("concurrent", args.concurrency)):
            count = args.messages if concurrency > 1 else max(1, args.messages // 4)
            before = _redis_cpu(redis_url) if on_redis else 0.0
            rate = await _measure(publisher, count, concurrency, body)
            figures: dict[str, Any] = {
                "messages": count,
                "in_flight": concurrency,
                "per_second": round(rate),
            }
            if on_redis:
                used = _redis_cpu(redis_url) - before
                figures["redis_us_per_publication"] = round(used / count * 1e6, 2)
            results[f"{name} {mode}"] = figures
        await publisher.aclose()
        publisher.close()
    return results


def run_publish(args: argparse.Namespace) -> int:
    from tidings.testing.redis import redis_server

    from .peers import Target, start_durable, start_tidings, wait_ready

    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1
    key = secrets.token_urlsafe(12)
    cpu = args.server_cpu if pin else None
    with redis_server() as server:
        if pin and server.pid is not None:
            os.sched_setaffinity(server.pid, {args.server_cpu})
        nodes: dict[str, Target] = {"http": start_tidings("bench", key, 16, cpu, server.url)}
        try:
            if "sqlite" in args.peer:
                nodes["memory"] = start_tidings("bench", key, 16, cpu, name="tidings-memory")
                nodes["sqlite"] = start_durable("bench", key, 16, cpu)
            for node in nodes.values():
                asyncio.run(wait_ready(node))
            if pin:
                os.sched_setaffinity(0, {args.client_cpu})
            urls = {name: f"http://127.0.0.1:{node.port}" for name, node in nodes.items()}
            results = asyncio.run(_run(args, server.url, urls, key))
        finally:
            for node in nodes.values():
                node.stop()
    print(
        f"tidings bench publish: {args.messages} messages of {args.size} bytes, one client "
        f"process; Redis and the node on CPU {args.server_cpu}, the publisher on "
        f"CPU {args.client_cpu}" + ("" if pin else " (not pinned)")
    )
    for name, figures in results.items():
        redis_cost = figures.get("redis_us_per_publication")
        cost = "" if redis_cost is None else f"; Redis {redis_cost} µs/publication"
        print(
            f"  {name:<18} {figures['per_second']:>8,}/s  ({figures['in_flight']} in flight{cost})"
        )
    base = results["http concurrent"]["per_second"] or 1
    ratio = results["redis concurrent"]["per_second"] / base
    print(f"  redis:// / http:// (concurrent): x{ratio:.2f}")
    if "sqlite" in args.peer:
        memory = results["memory concurrent"]["per_second"] or 1
        durable = results["sqlite concurrent"]["per_second"] / memory
        print(f"  sqlite / memory (concurrent): x{durable:.2f}")
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump({"results": results}, fh, indent=2)
    return 0
