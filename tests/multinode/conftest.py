"""Redis topologies, each one shared by the tests of a module, as ``RedisSettings``.

Every test gets a key prefix of its own, so tests sharing a server don't see each other's
streams."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tidings.brokers.redis_settings import RedisSettings
from tidings.testing import redis as topologies

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))

_prefixes = itertools.count()


def tls_url(server: topologies.RedisServer) -> str:
    return f"{server.url}?ssl_ca_certs={quote(server.client_options()['ssl_ca_certs'])}"


@pytest.fixture(scope="module")
def topology(request: pytest.FixtureRequest) -> Iterator[RedisSettings]:
    """The settings of one running topology (``request.param`` names it)."""
    kind = request.param
    if kind == "cluster":
        with topologies.redis_cluster(masters=3) as cluster:
            yield RedisSettings(urls=tuple(cluster.urls), cluster=True)
    elif kind == "sentinel":
        with topologies.redis_sentinel() as group:
            urls = tuple(f"redis://{h}:{p}" for h, p in group.sentinel_addresses)
            yield RedisSettings(urls=urls, sentinel_master=group.master_name)
    elif kind == "sharded":
        with topologies.redis_server() as one, topologies.redis_server() as two:
            yield RedisSettings(urls=(one.url, two.url))
    elif kind == "acl":
        with topologies.redis_server(username="tidings", password="s3cret pass") as server:
            yield RedisSettings(urls=(server.url,))
    elif kind == "tls":
        with topologies.redis_server(tls=True) as server:
            yield RedisSettings(urls=(tls_url(server),))
    else:
        with topologies.redis_server() as server:
            yield RedisSettings(urls=(server.url,))


@pytest.fixture
def settings(topology: RedisSettings) -> RedisSettings:
    """The module's topology under a key prefix of this test's own."""
    return RedisSettings(
        urls=topology.urls,
        cluster=topology.cluster,
        sentinel_master=topology.sentinel_master,
        prefix=f"t{next(_prefixes)}",
        health_interval=0.2,
        timeout=2.0,
        connect_timeout=2.0,
    )
