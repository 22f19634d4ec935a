"""The several-node broker and presence suites against every Redis topology: standalone,
two shards by consistent hashing, a three-master Cluster, Sentinel, an ACL user with a
password, and TLS."""

from __future__ import annotations

import pytest

from tidings.brokers.redis import RedisBroker
from tidings.brokers.redis_backend import RedisBackend
from tidings.brokers.redis_control import RedisPresenceManager
from tidings.brokers.redis_settings import RedisSettings
from tidings.testing import BROKER_CHECKS, PRESENCE_CHECKS, check_broker, check_presence

TOPOLOGIES = ["standalone", "sharded", "cluster", "sentinel", "acl", "tls"]

pytestmark = pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True)


@pytest.mark.parametrize("check", list(BROKER_CHECKS))
async def test_broker(settings: RedisSettings, check: str) -> None:
    # Each node has a backend of its own, as each process would.
    await check_broker(lambda: RedisBroker(RedisBackend(settings)), only=[check])


@pytest.mark.parametrize("check", list(PRESENCE_CHECKS))
async def test_presence(settings: RedisSettings, check: str) -> None:
    await check_presence(lambda ttl: RedisPresenceManager(settings, ttl=ttl), only=[check])
