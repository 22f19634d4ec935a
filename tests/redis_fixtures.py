"""Fixtures that start real Redis topologies (``tidings.testing.redis``) on free ports.

Registered for every test by ``tests/conftest.py``. Standalone servers are new for each
test (they are quick, and a test may restart, pause or kill its own); a Redis Cluster takes
about two seconds to come up, so ``redis_cluster`` is shared by the tests of a module. A
Sentinel group fails over in its tests, so each test gets its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tidings.testing import redis as topologies
from tidings.testing.redis import RedisCluster, RedisSentinel, RedisServer, stop_all

REDIS_USER = "tidings"
REDIS_PASSWORD = "s3cret pass"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A standalone redis-server of this test's own, without persistence."""
    with topologies.redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_pair() -> Iterator[list[RedisServer]]:
    """Two standalone servers (channels sharded over several instances)."""
    servers = [topologies.redis_server(), topologies.redis_server()]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        stop_all(servers)


@pytest.fixture
def redis_acl_server() -> Iterator[RedisServer]:
    """A server that refuses unauthenticated clients: ACL user ``REDIS_USER`` with
    ``REDIS_PASSWORD`` (its ``url`` carries both)."""
    with topologies.redis_server(username=REDIS_USER, password=REDIS_PASSWORD) as server:
        yield server


@pytest.fixture
def redis_tls_server() -> Iterator[RedisServer]:
    """A server on a TLS port only (``rediss://``); ``client_options()`` trusts its CA."""
    with topologies.redis_server(tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A three-master Redis Cluster shared by the tests of a module."""
    with topologies.redis_cluster(masters=3) as cluster:
        yield cluster


@pytest.fixture
def redis_sentinel() -> Iterator[RedisSentinel]:
    """A master, a replica and three sentinels watching them as ``tidings``."""
    with topologies.redis_sentinel() as group:
        yield group
