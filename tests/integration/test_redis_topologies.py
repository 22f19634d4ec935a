"""The Redis test topologies (``tidings.testing.redis``) come up, answer redis-py, and fail
the way the tests built on them need: restarts lose data, a paused server answers nothing,
a cluster routes by slot, a Sentinel group fails over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.asyncio.sentinel import Sentinel

from redis_fixtures import REDIS_PASSWORD, REDIS_USER
from tidings.testing import TIMEOUT
from tidings.testing.redis import (
    RedisCluster,
    RedisProcessError,
    RedisSentinel,
    RedisServer,
    redis_server,
)


@asynccontextmanager
async def client(url: str, **options: Any) -> AsyncIterator[aioredis.Redis]:
    options.setdefault("socket_timeout", TIMEOUT)
    conn = aioredis.Redis.from_url(url, **options)
    try:
        yield conn
    finally:
        await conn.aclose()


async def test_a_server_answers_on_its_own_port_and_a_restart_loses_the_data(
    redis_server: RedisServer,
) -> None:
    assert redis_server.port not in (6379, 0)
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}"
    async with client(redis_server.url) as r:
        await r.set("k", "v")
        assert await r.get("k") == b"v"
    pid = redis_server.pid
    await redis_server.arestart()
    assert redis_server.pid != pid and redis_server.running
    async with client(redis_server.url) as r:
        assert await r.get("k") is None
        assert await r.dbsize() == 0


async def test_persistence_survives_a_kill_unless_wiped() -> None:
    async with redis_server(persistence=True) as server:
        async with client(server.url) as r:
            await r.set("k", "kept")
        server.kill()
        assert not server.running
        await server.astart()
        async with client(server.url) as r:
            assert await r.get("k") == b"kept"
        await server.astop()
        await server.astart(wipe=True)
        async with client(server.url) as r:
            assert await r.get("k") is None


async def test_a_killed_server_refuses_connections_until_started(
    redis_server: RedisServer,
) -> None:
    port = redis_server.port
    redis_server.kill()
    async with client(redis_server.url) as r:
        with pytest.raises(redis.exceptions.ConnectionError):
            await r.ping()
    await redis_server.astart()
    assert redis_server.port == port
    async with client(redis_server.url) as r:
        assert await r.ping()


async def test_a_paused_server_answers_nothing_until_resumed(
    redis_server: RedisServer,
) -> None:
    async with client(redis_server.url, socket_timeout=0.3) as r:
        assert await r.ping()
        redis_server.pause()
        # The connection stays open: only the timeout ends the wait.
        with pytest.raises(redis.exceptions.TimeoutError):
            await r.ping()
        redis_server.resume()
    async with client(redis_server.url) as r:
        assert await r.ping()


async def test_two_servers_are_separate(redis_pair: list[RedisServer]) -> None:
    first, second = redis_pair
    assert first.port != second.port
    async with client(first.url) as a, client(second.url) as b:
        await a.set("k", "first")
        assert await b.get("k") is None


async def test_an_acl_user_is_required(redis_acl_server: RedisServer) -> None:
    port = redis_acl_server.port
    async with client(f"redis://127.0.0.1:{port}") as anonymous:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.ping()
    async with client(f"redis://{REDIS_USER}:wrong@127.0.0.1:{port}") as wrong:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await wrong.ping()
    async with client(redis_acl_server.url) as r:
        assert await r.acl_whoami() == REDIS_USER
    assert redis_acl_server.password == REDIS_PASSWORD


async def test_requirepass() -> None:
    async with redis_server(password="pw") as server:
        assert server.url == f"redis://:pw@127.0.0.1:{server.port}"
        async with client(f"redis://127.0.0.1:{server.port}") as anonymous:
            with pytest.raises(redis.exceptions.AuthenticationError):
                await anonymous.ping()
        async with client(server.url) as r:
            assert await r.acl_whoami() == "default"


async def test_tls_with_the_throwaway_ca(redis_tls_server: RedisServer) -> None:
    server = redis_tls_server
    assert server.url.startswith("rediss://127.0.0.1:")
    async with client(server.url, **server.client_options()) as r:
        await r.set("k", "over tls")
        assert await r.get("k") == b"over tls"
    # The system's trust store doesn't know the test CA.
    async with client(server.url) as untrusting:
        with pytest.raises(redis.exceptions.ConnectionError, match="certificate"):
            await untrusting.ping()
    # Plain RESP on the TLS port gets no answer a client can use.
    async with client(f"redis://127.0.0.1:{server.port}", socket_timeout=2) as plain:
        with pytest.raises(redis.exceptions.ConnectionError):
            await plain.ping()


async def test_tls_client_certificates_can_be_required() -> None:
    async with redis_server(tls_client_auth=True) as server:
        async with client(server.url, **server.client_options()) as r:
            assert await r.ping()
        ca_only = {"ssl_ca_certs": server.client_options()["ssl_ca_certs"]}
        async with client(server.url, **ca_only) as anonymous:
            with pytest.raises(redis.exceptions.ConnectionError):
                await anonymous.ping()


def test_a_start_that_fails_says_why() -> None:
    server = RedisServer(config={"no-such-directive": "1"})
    with pytest.raises(
        RedisProcessError, match=r"(?s)exited with 1.*no-such-directive.*Bad directive"
    ):
        server.start()
    server.close()


# --- Redis Cluster ---------------------------------------------------------------------


async def test_the_cluster_is_up_on_every_node(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.nodes) == 3
    for node in redis_cluster.nodes:
        async with client(node.url) as r:
            info = await r.execute_command("CLUSTER INFO")  # parsed by redis-py
            assert info["cluster_state"] == "ok"
            assert info["cluster_known_nodes"] == "3"


async def test_the_cluster_routes_keys_of_three_slots(redis_cluster: RedisCluster) -> None:
    # One key for each master: keys whose slots fall in each third of the slot range.
    keys: dict[int, str] = {}
    for n in range(1000):
        key = f"key-{n}"
        owner = redis_cluster.nodes.index(redis_cluster.master_for_key(key))
        keys.setdefault(owner, key)
        if len(keys) == 3:
            break
    assert sorted(keys) == [0, 1, 2]
    cluster = ClusterClient.from_url(redis_cluster.url, socket_timeout=TIMEOUT)
    try:
        for key in keys.values():
            await cluster.set(key, f"value of {key}")
        for key in keys.values():
            assert await cluster.get(key) == f"value of {key}".encode()
    finally:
        await cluster.aclose()
    # Each key was stored by the master of its slot, and only there.
    for index, node in enumerate(redis_cluster.nodes):
        async with client(node.url) as direct:
            own = keys[index]
            assert await direct.execute_command("GET", own) == f"value of {own}".encode()
            for other in set(keys.values()) - {own}:
                with pytest.raises(redis.exceptions.MovedError):
                    await direct.execute_command("GET", other)
        # Clean up for the other tests of the module.
        async with client(node.url) as direct:
            await direct.execute_command("DEL", keys[index])


async def test_hash_tags_put_keys_in_one_slot(redis_cluster: RedisCluster) -> None:
    slots = {redis_cluster.key_slot(f"{{news}}:{part}") for part in ("stream", "meta", "seq")}
    assert len(slots) == 1


# --- Sentinel --------------------------------------------------------------------------


async def test_sentinel_failover_changes_the_master(redis_sentinel: RedisSentinel) -> None:
    group = redis_sentinel
    assert len(group.sentinels) == 3 and len(group.replicas) == 1
    sentinel = Sentinel(group.sentinel_addresses, socket_timeout=TIMEOUT)
    old = group.master
    assert old is not None
    assert await sentinel.discover_master(group.master_name) == old.address
    master = sentinel.master_for(group.master_name, socket_timeout=TIMEOUT)
    try:
        await master.set("k", "before")
        # Replicated before the failover, so it is still there after.
        assert await master.execute_command("WAIT", 1, int(TIMEOUT * 1000)) == 1
        new = await group.afailover()
        assert new is not old and new is group.master
        assert await sentinel.discover_master(group.master_name) == new.address
        async with client(new.url) as direct:
            assert (await direct.info("replication"))["role"] == "master"
            assert await direct.get("k") == b"before"
        # The sentinel-aware client follows the new master.
        await master.connection_pool.disconnect()
        await master.set("k", "after")
        async with client(new.url) as direct:
            assert await direct.get("k") == b"after"
    finally:
        await master.aclose()
        for conn in sentinel.sentinels:
            await conn.aclose()


async def test_a_killed_master_is_replaced_by_the_sentinels(
    redis_sentinel: RedisSentinel,
) -> None:
    group = redis_sentinel
    replica = group.replicas[0]
    old = await group.akill_master()
    assert not old.running
    assert group.master is replica
    async with client(replica.url) as direct:
        assert (await direct.info("replication"))["role"] == "master"
    sentinel = Sentinel(group.sentinel_addresses, socket_timeout=TIMEOUT)
    try:
        assert await sentinel.discover_master(group.master_name) == replica.address
    finally:
        for conn in sentinel.sentinels:
            await conn.aclose()
