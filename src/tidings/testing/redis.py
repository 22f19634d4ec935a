"""Real Redis topologies for tests and benchmarks, on free 127.0.0.1 ports.

Each helper runs Debian's ``redis-server`` (``$TIDINGS_REDIS_SERVER`` names another) in a
temporary directory of its own, waits until it answers (``PING`` polled under a deadline)
and stops it on exit (``SIGTERM``, then ``SIGKILL``). None of them touches the machine's own
Redis on 6379. All are sync and async context managers::

    async with redis_server() as server:          # RedisServer
        url = server.url                          # redis://127.0.0.1:<port>
        await server.arestart()                   # same port, data lost
        server.pause(); server.resume()           # SIGSTOP / SIGCONT: a hung server

    with redis_cluster(masters=3) as cluster:     # RedisCluster: cluster.urls
        ...
    with redis_sentinel() as group:               # RedisSentinel: group.sentinel_addresses
        group.failover()                          # or group.kill_master()

- ``redis_server(password=..., username=..., tls=True, persistence=True, ...)``:
  ``RedisServer``, one process; ``url``, ``port``, ``start``/``stop``/``restart``/``kill``,
  ``pause``/``resume``, ``client_options()`` for redis-py (the CA with TLS).
- ``redis_cluster(masters=3, replicas=0)``: ``RedisCluster``, ready when every node
  reports ``cluster_state:ok``; ``urls``, ``nodes``, ``master_for_key(key)``.
- ``redis_sentinel(master_name="tidings", replicas=1, sentinels=3)``: ``RedisSentinel``;
  ``master``, ``sentinel_addresses``, ``failover()``, ``kill_master()``.

A helper that can't bring its servers up raises ``RedisProcessError`` with the end of the
server's log.
"""

from __future__ import annotations

from .redis_groups import (
    SLOTS,
    RedisCluster,
    RedisSentinel,
    SentinelProcess,
    redis_cluster,
    redis_sentinel,
)
from .redis_process import (
    REDIS_SERVER,
    RedisProcessError,
    RedisServer,
    free_port,
    redis_server,
    redis_server_executable,
    stop_all,
)

__all__ = [
    "REDIS_SERVER",
    "SLOTS",
    "RedisCluster",
    "RedisProcessError",
    "RedisSentinel",
    "RedisServer",
    "SentinelProcess",
    "free_port",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
    "redis_server_executable",
    "stop_all",
]
