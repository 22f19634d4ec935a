"""Groups of ``redis-server`` processes: a Redis Cluster and a Sentinel group.

Both are documented in ``tidings.testing.redis``, which re-exports them.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from . import TIMEOUT
from .redis_process import (
    RedisProcessError,
    RedisServer,
    _poll_delays,
    _quote,
    free_port,
    stop_all,
)
from .resp import RespError, parse_info

__all__ = [
    "SLOTS",
    "RedisCluster",
    "RedisSentinel",
    "SentinelProcess",
    "redis_cluster",
    "redis_sentinel",
]

SLOTS = 16384  # hash slots of a Redis Cluster

_T = TypeVar("_T")


def _wait_for(what: str, check: Callable[[], _T | None], timeout: float = TIMEOUT) -> _T:
    """Poll ``check`` until it returns something other than None or False (connection
    errors and error replies count as not yet); raise ``RedisProcessError`` naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    for delay in _poll_delays():
        try:
            result = check()
        except (OSError, RespError) as exc:
            last, result = exc, None
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            why = f" (last error: {last})" if last else ""
            raise RedisProcessError(f"timed out after {timeout} s waiting for {what}{why}")
        time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _fields(entry: list[Any]) -> dict[str, Any]:
    """A reply of alternating names and values (``SENTINEL REPLICAS``, ``CLUSTER SHARDS``)
    as a mapping."""
    return dict(zip(entry[::2], entry[1::2], strict=True))


def _healthy(fields: dict[str, Any]) -> bool:
    """A sentinel's view of an instance: connected and not thought down."""
    flags = str(fields.get("flags", "")).split(",")
    return not {"s_down", "o_down", "disconnected"} & set(flags)


def _synced(replica: RedisServer) -> bool:
    return replica.info("replication").get("master_link_status") == "up"


class _Group:
    """Sync and async context managers over ``start()`` and ``close()``."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self: Any) -> Any:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self: Any) -> Any:
        try:
            await self.astart()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _start_all(servers: list[RedisServer], timeout: float = TIMEOUT) -> None:
    """Start several servers at once: spawn them all, then wait for each. A port that was
    taken meanwhile makes that one start again on another."""
    for server in servers:
        server.spawn()
    for server in servers:
        try:
            server.wait_ready(timeout)
        except RedisProcessError:
            server.kill()
            if not server._port_was_taken():
                raise
            server._port = None
            server.start(timeout=timeout)  # on another port


class RedisCluster(_Group):
    """A Redis Cluster of ``masters`` masters (slots split evenly) and ``replicas``
    replicas per master, on 127.0.0.1, ready when every node reports ``cluster_state:ok``.

    ``urls`` (and ``startup_nodes``) are where a cluster client starts; ``nodes`` are the
    ``RedisServer`` processes (masters first), each restartable on its own. ``password`` and
    ``username`` apply to every node. ``node_timeout_ms`` is ``cluster-node-timeout``: how
    long a silent node takes to be considered failed.

    A master won't report ``ok`` earlier than 2 s after it started (Redis waits that long
    before a master rejoins as writable), so share one cluster per test module.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        *,
        password: str | None = None,
        username: str | None = None,
        node_timeout_ms: int = 5000,
        config: Mapping[str, str | int] | None = None,
    ) -> None:
        if not 1 <= masters <= 16:
            raise ValueError("a test cluster has 1 to 16 masters")
        self.masters_count = masters
        self.replicas_count = replicas
        self.password = password
        self.username = username
        self.node_timeout_ms = node_timeout_ms
        self.config = dict(config or {})
        self.nodes: list[RedisServer] = []
        self.node_ids: dict[RedisServer, str] = {}

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def _node(self) -> RedisServer:
        bus = free_port()
        config: dict[str, str | int] = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": self.node_timeout_ms,
            # An explicit bus port: the default (port + 10000) may be taken or out of range.
            "cluster-port": bus,
            **self.config,
        }
        return RedisServer(password=self.password, username=self.username, config=config)

    def start(self) -> None:
        """Start every node, assign the slots, join the nodes, and wait until every node
        sees the whole cluster up."""
        if self.nodes:
            raise RedisProcessError("the cluster is already started")
        count = self.masters_count * (1 + self.replicas_count)
        self.nodes = [self._node() for _ in range(count)]
        _start_all(self.nodes)
        masters = self.nodes[: self.masters_count]
        for node in self.nodes:
            self.node_ids[node] = node.command("CLUSTER", "MYID")
        for index, node in enumerate(masters):
            low = index * SLOTS // len(masters)
            high = (index + 1) * SLOTS // len(masters) - 1
            # Distinct epochs, as redis-cli --cluster create gives: no collision to resolve.
            node.command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
            node.command("CLUSTER", "ADDSLOTSRANGE", low, high)
        # Every pair meets directly: gossip alone would take a second or more to spread.
        for index, node in enumerate(self.nodes):
            for other in self.nodes[index + 1 :]:
                node.command(
                    "CLUSTER", "MEET", other.host, other.port, other.config["cluster-port"]
                )
        for index, replica in enumerate(self.nodes[self.masters_count :]):
            master = masters[index // self.replicas_count]
            master_id = self.node_ids[master]
            # It must have heard of the master through gossip first.
            _wait_for(
                f"node {replica.port} to learn of {master.port}",
                functools.partial(replica.command, "CLUSTER", "REPLICATE", master_id),
            )
        self.wait_ok()

    def wait_ok(self, timeout: float = TIMEOUT) -> None:
        """Wait until every running node reports ``cluster_state:ok``, knows every node and
        sees every slot served."""
        running = [node for node in self.nodes if node.running]

        def ok() -> bool:
            for node in running:
                info = parse_info(node.command("CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                    return False
                if int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                    return False
            return True

        _wait_for("cluster_state:ok on every node", ok, timeout)

    def key_slot(self, key: str) -> int:
        """The hash slot of ``key`` (``CLUSTER KEYSLOT``: hash tags count)."""
        return int(self.nodes[0].command("CLUSTER", "KEYSLOT", key))

    def master_for_slot(self, slot: int) -> RedisServer:
        """The node that serves ``slot`` now (``CLUSTER SHARDS`` of a running node)."""
        by_id = {node_id: node for node, node_id in self.node_ids.items()}
        source = next(node for node in self.nodes if node.running)
        for shard in source.command("CLUSTER", "SHARDS"):
            fields = _fields(shard)
            ranges = fields["slots"]
            served = any(
                int(ranges[i]) <= slot <= int(ranges[i + 1]) for i in range(0, len(ranges), 2)
            )
            if not served:
                continue
            for node in fields["nodes"]:
                entry = _fields(node)
                if entry["role"] == "master":
                    return by_id[entry["id"]]
        raise RedisProcessError(f"no master serves slot {slot}")

    def master_for_key(self, key: str) -> RedisServer:
        return self.master_for_slot(self.key_slot(key))

    def move_slot(self, slot: int, target: RedisServer) -> None:
        """Move ``slot`` and its keys to the master ``target``, as ``redis-cli --cluster
        reshard`` does (https://redis.io/docs/latest/commands/cluster-setslot/): IMPORTING on
        the target, MIGRATING on the source, MIGRATE of the keys, then NODE on every
        master. Subscribers of its shard channels get an unasked ``sunsubscribe``."""
        source = self.master_for_slot(slot)
        if source is target:
            return
        src, dst = self.node_ids[source], self.node_ids[target]
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", src)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst)
        while keys := source.command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            auth: list[str] = []
            if self.password is not None:
                auth = ["AUTH2", self.username or "default", self.password]
            source.command("MIGRATE", target.host, target.port, "", 0, 5000, *auth, "KEYS", *keys)
        for node in self.nodes[: self.masters_count]:
            node.command("CLUSTER", "SETSLOT", slot, "NODE", dst)

    def close(self) -> None:
        stop_all(self.nodes)
        self.nodes = []
        self.node_ids = {}

    def __repr__(self) -> str:
        return f"<RedisCluster {[n.port for n in self.nodes]}>"


def redis_cluster(masters: int = 3, **options: Any) -> RedisCluster:
    """A ``RedisCluster`` (not started): ``with redis_cluster() as cluster:``."""
    return RedisCluster(masters, **options)


class SentinelProcess(RedisServer):
    """One ``redis-server --sentinel``. Sentinel rewrites its configuration file as it learns
    (a failover, peers): the file is written once, and a restart reads what it became."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self._sentinel_lines = lines

    def _write_config(self) -> Path:
        assert self.directory is not None
        path = self.directory / "sentinel.conf"
        if not path.exists():
            path.write_text("\n".join(self._config_lines()) + "\n")
        return path

    def _config_lines(self) -> list[str]:
        assert self.directory is not None
        return [
            f"bind {self.host}",
            f"port {self.port}",
            f"dir {_quote(str(self.directory))}",
            'logfile ""',
            "daemonize no",
            *self._sentinel_lines,
        ]

    def _command_line(self, config_path: Path) -> list[str]:
        return [*super()._command_line(config_path), "--sentinel"]


class RedisSentinel(_Group):
    """A master, ``replicas`` replicas (each synced before the sentinels start) and
    ``sentinels`` sentinels watching them as ``master_name`` with a quorum of a majority.

    The sentinels are started knowing each other and the replicas (as a rewritten sentinel
    configuration would), so they are ready at once instead of after rounds of discovery.
    ``sentinel_addresses`` is what a Sentinel client is given; ``master`` is the server that
    is master now. ``failover()`` asks for a failover and waits until every sentinel
    reports the new master; ``kill_master()`` kills the master (SIGKILL) and waits the same
    way for the sentinels to fail over by themselves (``down_after_ms`` plus an election).
    """

    def __init__(
        self,
        *,
        master_name: str = "tidings",
        replicas: int = 1,
        sentinels: int = 3,
        password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10000,
    ) -> None:
        if replicas < 1 or sentinels < 1:
            raise ValueError("a Sentinel group needs a replica and a sentinel")
        self.master_name = master_name
        self.replicas_count = replicas
        self.sentinels_count = sentinels
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: list[RedisServer] = []
        self.sentinels: list[SentinelProcess] = []
        self.master: RedisServer | None = None

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [sentinel.address for sentinel in self.sentinels]

    @property
    def sentinel_urls(self) -> list[str]:
        return [sentinel.url for sentinel in self.sentinels]

    @property
    def replicas(self) -> list[RedisServer]:
        return [server for server in self.servers if server is not self.master]

    def start(self) -> None:
        if self.servers:
            raise RedisProcessError("the Sentinel group is already started")
        master = self.master = RedisServer(password=self.password)
        master.start()
        self.servers = [master]
        replicas = [
            RedisServer(password=self.password, replica_of=master.address)
            for _ in range(self.replicas_count)
        ]
        self.servers += replicas
        _start_all(replicas)
        for replica in replicas:
            _wait_for(f"replica {replica.port} to sync", functools.partial(_synced, replica))
        ports = [free_port() for _ in range(self.sentinels_count)]
        ids = [secrets.token_hex(20) for _ in ports]
        quorum = self.sentinels_count // 2 + 1
        name = self.master_name
        for index, port in enumerate(ports):
            lines = [
                f"sentinel myid {ids[index]}",
                f"sentinel monitor {name} {master.host} {master.port} {quorum}",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
            ]
            if self.password is not None:
                lines.append(f"sentinel auth-pass {name} {_quote(self.password)}")
            lines += [f"sentinel known-replica {name} {r.host} {r.port}" for r in replicas]
            lines += [
                f"sentinel known-sentinel {name} 127.0.0.1 {ports[other]} {ids[other]}"
                for other in range(len(ports))
                if other != index
            ]
            sentinel = SentinelProcess(lines)
            sentinel._port = port
            self.sentinels.append(sentinel)
        _start_all(list(self.sentinels))
        self.wait_settled()

    def reported_master(self, sentinel: SentinelProcess) -> tuple[str, int] | None:
        """``SENTINEL GET-MASTER-ADDR-BY-NAME`` of one sentinel."""
        reply = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return (reply[0], int(reply[1])) if reply else None

    def wait_settled(self, timeout: float = TIMEOUT) -> None:
        """Wait until every running sentinel names ``master``, sees its running replicas
        linked to it and every other sentinel connected."""
        assert self.master is not None
        master = self.master
        replicas = {r.port for r in self.replicas if r.running}
        name = self.master_name

        def settled() -> bool:
            for sentinel in self.sentinels:
                if not sentinel.running:
                    continue
                if self.reported_master(sentinel) != master.address:
                    return False
                linked = {
                    int(fields["port"])
                    for fields in map(_fields, sentinel.command("SENTINEL", "REPLICAS", name))
                    if _healthy(fields) and fields.get("master-link-status") == "ok"
                }
                if not replicas <= linked:
                    return False
                peers = map(_fields, sentinel.command("SENTINEL", "SENTINELS", name))
                if sum(map(_healthy, peers)) < sum(s.running for s in self.sentinels) - 1:
                    return False
            return True

        _wait_for("the sentinels to agree on the master and see the group", settled, timeout)

    def _wait_new_master(self, old: RedisServer, timeout: float) -> RedisServer:
        by_address = {server.address: server for server in self.servers}

        def switched() -> RedisServer | None:
            reported = {self.reported_master(s) for s in self.sentinels if s.running}
            if len(reported) != 1:
                return None
            address = reported.pop()
            if address is None or address == old.address or address not in by_address:
                return None
            new = by_address[address]
            if new.info("replication").get("role") != "master":
                return None
            return new

        self.master = _wait_for("the sentinels to report a new master", switched, timeout)
        return self.master

    def failover(self, timeout: float = TIMEOUT) -> RedisServer:
        """``SENTINEL FAILOVER``: a replica is promoted; returns once every sentinel reports
        it and it says it is master. The old master is turned into a replica by the
        sentinels a little later."""
        old = self.master
        assert old is not None, "start() first"
        running = next(s for s in self.sentinels if s.running)
        _wait_for(
            "a sentinel to accept the failover",
            lambda: running.command("SENTINEL", "FAILOVER", self.master_name) == "OK",
            timeout,
        )
        return self._wait_new_master(old, timeout)

    def kill_master(self, timeout: float = TIMEOUT) -> RedisServer:
        """``SIGKILL`` the master and wait until the sentinels have failed over to a
        replica; returns the old master (stopped; ``start()`` brings it back, and the
        sentinels make it a replica)."""
        old = self.master
        assert old is not None, "start() first"
        old.kill()
        self._wait_new_master(old, timeout)
        return old

    async def afailover(self) -> RedisServer:
        return await asyncio.to_thread(self.failover)

    async def akill_master(self) -> RedisServer:
        return await asyncio.to_thread(self.kill_master)

    def close(self) -> None:
        # Sentinels first: they would otherwise see the master go and start a failover.
        stop_all(self.sentinels)
        stop_all(self.servers)
        self.sentinels = []
        self.servers = []
        self.master = None

    def __repr__(self) -> str:
        master = self.master.port if self.master else None
        return f"<RedisSentinel {self.master_name} master={master}>"


def redis_sentinel(**options: Any) -> RedisSentinel:
    """A ``RedisSentinel`` (not started): ``with redis_sentinel() as group:``."""
    return RedisSentinel(**options)
