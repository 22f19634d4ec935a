"""tidings on a Redis server of its own, for ``tidings bench fanout``: one node
(``--peer redis``), publishing through a second node (``--peer redis-2nodes``), or N nodes
sharing the subscribers and the publishes (``--peer redis-nodes=N``); and its baseline,
N memory-broker nodes with the same share of subscribers each, every message published to
every one of them (``--peer memory-nodes=N``): the same work per node, no broker between.

Redis is started by the bench on a free port (``tidings.testing.redis``) and pinned with
the load generator, so that the server's CPU is the nodes' alone.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import TYPE_CHECKING

from .peers import BenchError, Helper, Target, start_tidings

if TYPE_CHECKING:
    from tidings.testing.redis import RedisServer

__all__ = ["MAX_NODES", "nodes_peer", "start_nodes", "start_on_redis"]

MAX_NODES = 16
_NODES = re.compile(r"(redis|memory)-nodes=(\d+)")


def nodes_peer(name: str) -> tuple[str, int] | None:
    """(``redis`` or ``memory``, N) of a ``redis-nodes=N`` or ``memory-nodes=N`` peer name,
    None for other names; ``ValueError`` when N is out of 1..MAX_NODES."""
    found = _NODES.fullmatch(name)
    if found is None:
        return None
    kind, count = found.group(1), int(found.group(2))
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"{kind}-nodes=N takes N from 1 to {MAX_NODES}, got {count}")
    return kind, count


def _redis(cpus: tuple[int, int] | None) -> tuple[RedisServer, list[Helper]]:
    from tidings.testing.redis import redis_server

    server = redis_server()
    server.start()
    if server.pid is None:  # pragma: no cover - a started server has a process
        server.stop()
        raise BenchError("redis-server started without a process id")
    if cpus is not None:
        os.sched_setaffinity(server.pid, {cpus[1]})
    return server, [Helper("Redis", server.pid, cpus[1] if cpus else None)]


def start_on_redis(
    channel: str, subscribers: int, cpus: tuple[int, int] | None, cross: bool
) -> Target:
    """tidings on a Redis server of its own (pinned with the load generator: the server's
    CPU is the node's): subscribers on one node, publishes through it or, with ``cross``,
    through a second node (on the load generator's CPU)."""
    server, helpers = _redis(cpus)
    key = secrets.token_urlsafe(12)
    name = "tidings-redis-2nodes" if cross else "tidings-redis"
    cpu = cpus[0] if cpus else None
    target: Target | None = None
    try:
        target = start_tidings(channel, key, subscribers, cpu, server.url, name)
        target.companions.append(server)
        target.cpu = cpu
        if cross:
            other = start_tidings(channel, key, 256, cpus[1] if cpus else None, server.url)
            target.pub_target = other
            target.companions.insert(0, other)
            assert other.pid is not None
            helpers.append(Helper("publishing node", other.pid, cpus[1] if cpus else None))
        target.helpers = helpers
    except BaseException:
        if target is not None:
            target.stop()  # and Redis with it
        else:
            server.stop()
        raise
    return target


def start_nodes(
    channel: str, subscribers: int, count: int, cpus: tuple[int, int] | None, kind: str
) -> Target:
    """``count`` tidings nodes (separate ``tidings serve`` processes, each on a port of its
    own), on one Redis server (``kind`` ``redis``) or each on its memory broker
    (``memory``). Every node is pinned to the server's CPU, so their summed CPU time per
    delivery compares with one memory-broker node's on that CPU; Redis shares the load
    generator's. The bench splits the subscribers over the nodes; on Redis it sends its
    publishers round-robin over them, on memory brokers every message to every node."""
    server, helpers = _redis(cpus) if kind == "redis" else (None, [])
    key = secrets.token_urlsafe(12)
    cpu = cpus[0] if cpus else None
    share = -(-subscribers // count)
    nodes: list[Target] = []
    broker = server.url if server is not None else ""
    try:
        for i in range(count):
            name = f"tidings-{kind}-nodes={count}" + (f" node {i + 1}" if i else "")
            nodes.append(start_tidings(channel, key, share, cpu, broker, name))
    except BaseException:
        for node in nodes:
            node.stop()
        if server is not None:
            server.stop()
        raise
    target, more = nodes[0], nodes[1:]
    target.nodes = more
    target.companions += more  # the nodes stop before their Redis
    if server is not None:
        target.companions.append(server)
    target.helpers = helpers
    target.cpu = cpu
    target.cluster = True
    target.fan_publish = server is None
    return target
