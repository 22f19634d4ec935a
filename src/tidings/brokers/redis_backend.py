"""What one node's Redis broker, presence manager and controller share.

A ``RedisBackend`` is built from ``RedisSettings``: one or several *shards*, each a
standalone server (``redis://`` / ``rediss://`` URL), a master found through Sentinel, or
a Redis Cluster. A channel lives on one shard, chosen by jump consistent hashing of its
name (Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm", 2014), so
adding a shard moves only about 1/N of the channels. Within a Cluster, the hash tag
``{<channel>}`` keeps a channel's keys in one slot and its messages on that slot's shard
(sharded PUB/SUB, Redis 7).

Per shard the node holds one redis-py connection pool for commands, one connection of its
own for scripts (``Commands``; on a Cluster, redis-py pipelines: ``Pipeliner``) and one
PUB/SUB connection (``PubSub``) — on a Cluster one per master, for the slots that master
serves — whatever the number of channels and clients. Controller messages go over the first
shard's PUB/SUB connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from tidings.exceptions import BrokerError, BrokerUnavailable

from .redis_commands import Commands
from .redis_pubsub import Endpoint, PubSub
from .redis_scripts import SCRIPT_SHAS, SCRIPTS
from .redis_settings import RedisSettings, jump_hash, tls_context, url_options

__all__ = [
    "FAILURE_MEMORY",
    "Pipeliner",
    "RedisBackend",
    "RedisShard",
    "client_kwargs",
    "redis_error",
]

log = logging.getLogger("tidings.redis")


def client_kwargs(
    options: dict[str, Any], settings: RedisSettings, *, asynchronous: bool = True
) -> dict[str, Any]:
    """redis-py client arguments for a server's ``url_options`` (credentials, timeouts,
    TLS), shared by the node's clients and the Publisher's (sync ones too)."""
    retry = Retry if asynchronous else SyncRetry
    kwargs: dict[str, Any] = {
        "username": options["username"],
        "password": options["password"],
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "client_name": settings.node_name,
        # One retry at once: a pooled connection that a Redis restart closed is made
        # again; past that, failing fast is the caller's to handle (BrokerUnavailable).
        "retry": retry(NoBackoff(), 1),
    }
    if options.get("ssl"):
        kwargs["ssl"] = True
        for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            if key in options:
                kwargs[key] = options[key]
    return kwargs


FAILURE_MEMORY = 5.0  # seconds a failed command keeps /health at 503


def redis_error(address: str, exc: BaseException) -> BrokerError:
    """A redis-py failure as ``BrokerUnavailable`` (may be retried) or ``BrokerError``."""
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError | TimeoutError):
        return BrokerUnavailable(f"redis {address}: {exc}")
    return BrokerError(f"redis {address}: {exc}")


class Pipeliner:
    """Scripts run in one loop iteration go to Redis in one pipeline: one round trip and
    one parse for all of them. One pipeline is in flight at a time, so they reach Redis in
    the order they were asked for; what comes meanwhile waits and goes out together."""

    def __init__(self, client: Any, scripts: dict[str, str], address: str) -> None:
        self.client = client
        self.scripts = scripts  # name → sha
        self.address = address
        self.failed_at = 0.0  # when a pipeline last could not reach Redis; 0: it could since
        self._queue: list[tuple[str, Sequence[Any], asyncio.Future[Any]]] = []
        self._busy = False
        self._scheduled = False

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((name, [len(keys), *keys, *args], future))
        if not self._busy and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._queue:
            return
        batch, self._queue = self._queue, []
        self._busy = True
        task = asyncio.ensure_future(self._execute(batch))
        task.add_done_callback(self._done)

    def _done(self, _: asyncio.Future[None]) -> None:
        self._busy = False
        if self._queue:
            self._flush()

    async def _execute(self, batch: list[tuple[str, Sequence[Any], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._pipeline([("EVALSHA", self.scripts[n], *a) for n, a, _ in batch])
            again = [i for i, r in enumerate(replies) if isinstance(r, rexc.NoScriptError)]
            if again:  # Redis lost the scripts (a restart): send their bodies
                bodies = [("EVAL", SCRIPTS[batch[i][0]], *batch[i][1]) for i in again]
                for i, reply in zip(again, await self._pipeline(bodies), strict=True):
                    replies[i] = reply
        except Exception as exc:
            error = redis_error(self.address, exc)
            if isinstance(error, BrokerUnavailable):
                self.failed_at = time.monotonic()
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.failed_at = 0.0
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(redis_error(self.address, reply))
            else:
                future.set_result(reply)

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def aclose(self) -> None:
        """Nothing of its own to close: the client is its shard's."""


class RedisShard:
    """One Redis deployment: a command client and where its PUB/SUB connections go."""

    def __init__(self, backend: RedisBackend, settings: RedisSettings, urls: Sequence[str]) -> None:
        self.backend = backend
        self.settings = settings
        self.cluster = settings.cluster
        options = [url_options(u) for u in urls]
        first = options[0]
        self.kwargs = client_kwargs(first, settings)
        self.tls = tls_context(first) if first.get("ssl") else None
        self.client: Any
        self.sentinel: Sentinel | None = None
        if settings.cluster:
            self.client = RedisCluster(
                startup_nodes=[ClusterNode(o["host"], o["port"]) for o in options],
                max_connections=settings.pool_size,
                **self.kwargs,
            )
        elif settings.sentinel_master:
            extra = {"password": settings.sentinel_password} if settings.sentinel_password else {}
            self.sentinel = Sentinel(  # type: ignore[no-untyped-call]
                [(o["host"], o["port"]) for o in options],
                sentinel_kwargs={"socket_timeout": settings.timeout, **extra},
                **self.kwargs,
            )
            # The URLs' credentials and TLS are the master's; ``sentinel_password`` the
            # Sentinels' own.
            self.client = self.sentinel.master_for(
                settings.sentinel_master, max_connections=settings.pool_size
            )
        else:
            self.client = aioredis.Redis(
                host=first["host"],
                port=first["port"],
                max_connections=settings.pool_size,
                **self.kwargs,
            )
        self.address = ",".join(f"{o['host']}:{o['port']}" for o in options)
        self.default = (first["host"], first["port"])
        self.pubsubs: dict[tuple[str, int], PubSub] = {}
        self.scripts = dict(SCRIPT_SHAS)
        # Scripts: on a Cluster through redis-py, which routes each to its slot's master;
        # else on a connection of our own (``Commands``), cheaper per call.
        self.pipeliner: Pipeliner | Commands
        if settings.cluster:
            self.pipeliner = Pipeliner(self.client, self.scripts, self.address)
        else:
            self.pipeliner = Commands(self.endpoint(*self.default), timeout=settings.timeout)

    def endpoint(self, host: str, port: int) -> Endpoint:
        ep = Endpoint(
            host,
            port,
            username=self.kwargs.get("username"),
            password=self.kwargs.get("password"),
            ssl=self.tls,
            connect_timeout=self.settings.connect_timeout,
            name=self.settings.node_name,
        )
        if self.sentinel is not None:
            sentinel, master = self.sentinel, self.settings.sentinel_master

            async def resolve() -> None:
                ep.host, ep.port = await sentinel.discover_master(master)

            ep.resolve = resolve
        return ep

    async def start(self) -> None:
        try:
            if self.cluster:
                await self.client.initialize()
            for body in SCRIPTS.values():
                await self.client.script_load(body)
        except rexc.RedisError as exc:
            raise BrokerUnavailable(f"redis {self.address}: {exc}") from None

    def target(self, name: bytes) -> tuple[str, int]:
        """The server whose PUB/SUB connection carries ``name``."""
        if self.cluster:
            node = self.client.get_node_from_key(name)
            return node.host, node.port
        return self.default

    async def pubsub(self, target: tuple[str, int]) -> PubSub:
        ps = self.pubsubs.get(target)
        if ps is None:
            ps = PubSub(
                self.endpoint(*target),
                self.backend.dispatch,
                on_restored=self.backend.restored,
                on_dropped=self.backend.dropped,
                interval=self.settings.health_interval,
                timeout=self.settings.timeout,
            )
            self.pubsubs[target] = ps
            try:
                await ps.start()
            except BaseException:
                del self.pubsubs[target]
                raise
        return ps

    async def aclose(self) -> None:
        for ps in list(self.pubsubs.values()):
            await ps.aclose()
        self.pubsubs.clear()
        await self.pipeliner.aclose()
        await self.client.aclose()
        if self.sentinel is not None:
            for sentinel in self.sentinel.sentinels:
                await sentinel.aclose()


Handler = Callable[[bytes, bytes], None]


class RedisBackend:
    """Shards, their command clients and PUB/SUB routes, shared by one node's members.

    Members call ``start()``/``aclose()`` each; the backend connects on the first start and
    disconnects on the last close.
    """

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        if settings.cluster or settings.sentinel_master:
            self.shards = [RedisShard(self, settings, settings.urls)]
        else:
            self.shards = [RedisShard(self, settings, [url]) for url in settings.urls]
        # PUB/SUB name → its handler, and the shard and connection it was subscribed on.
        self.routes: dict[bytes, tuple[Handler, RedisShard, PubSub]] = {}
        self.listeners: list[Callable[[list[bytes]], None]] = []
        self._users = 0
        self.failed_at = 0.0  # when a command last could not reach Redis; 0: it could since
        self._tasks: set[asyncio.Future[None]] = set()
        self._starting: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._users += 1
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        try:
            await asyncio.shield(self._starting)
        except BaseException:
            self._users -= 1
            self._starting = None
            raise

    async def _start(self) -> None:
        await asyncio.gather(*(shard.start() for shard in self.shards))
        # The first shard's default server carries control messages.
        await self.shards[0].pubsub(self.shards[0].default)

    async def aclose(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users > 0:
            return
        self._starting = None
        for shard in self.shards:
            await shard.aclose()

    def shard(self, channel: str) -> RedisShard:
        if len(self.shards) == 1:
            return self.shards[0]
        return self.shards[jump_hash(channel.encode(), len(self.shards))]

    def health(self) -> str:
        """Why the backend is unusable now ("" when it is usable); the details are logged."""
        for shard in self.shards:
            for ps in shard.pubsubs.values():
                if ps.error:
                    return "redis PUB/SUB connection down"
        # A failure counts for FAILURE_MEMORY seconds: a node that no traffic probes comes
        # back by itself once its PUB/SUB connections are up again.
        now = time.monotonic()
        failed = [self.failed_at, *(shard.pipeliner.failed_at for shard in self.shards)]
        if any(now - t < FAILURE_MEMORY for t in failed if t):
            return "redis commands failing"
        return ""

    # PUB/SUB routes
    async def subscribe(
        self, shard: RedisShard, name: bytes, handler: Handler, how: bytes = b""
    ) -> None:
        """Route ``name``'s messages to ``handler``; returns once delivery is live. ``how``
        defaults to the shard's way for channels (SSUBSCRIBE on a Cluster); SUBSCRIBE and
        PSUBSCRIBE names go to the shard's first server."""
        if not how:
            how = b"ssubscribe" if shard.cluster else b"subscribe"
        target = shard.target(name) if how == b"ssubscribe" else shard.default
        ps = await shard.pubsub(target)
        self.routes[name] = (handler, shard, ps)
        try:
            await ps.subscribe(name, how)
        except BaseException:
            self.routes.pop(name, None)
            raise

    async def unsubscribe(self, name: bytes) -> None:
        route = self.routes.pop(name, None)
        if route is not None:
            await route[2].unsubscribe(name)

    def dispatch(self, route: bytes, channel: bytes, payload: bytes) -> None:
        found = self.routes.get(route)
        if found is not None:
            found[0](channel, payload)

    def restored(self, names: list[bytes]) -> None:
        """A PUB/SUB connection came back with ``names`` subscribed again."""
        for listener in self.listeners:
            listener(names)

    def dropped(self, name: bytes) -> None:
        """Redis unsubscribed ``name`` (its slot moved): subscribe it where it lives now."""
        route = self.routes.get(name)
        if route is None:
            return
        handler, shard, _ = route

        async def again() -> None:
            try:
                await shard.client.nodes_manager.initialize()
                await self.subscribe(shard, name, handler, b"ssubscribe")
            except BrokerError as exc:
                log.warning("resubscribe of %r failed: %s", name, exc)
                return
            self.restored([name])

        task = asyncio.ensure_future(again())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # commands
    async def call(self, shard: RedisShard, *args: Any, **options: Any) -> Any:
        """One command; Redis failures as ``BrokerUnavailable``/``BrokerError``."""
        try:
            reply = await shard.client.execute_command(*args, **options)
        except (rexc.RedisError, OSError) as exc:
            error = redis_error(shard.address, exc)
            if isinstance(error, BrokerUnavailable):
                self.failed_at = time.monotonic()
            raise error from None
        self.failed_at = 0.0
        return reply

    async def script(
        self, shard: RedisShard, name: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run a loaded script (pipelined with the others of this loop iteration), loading
        it again if Redis lost it (a restart)."""
        return await shard.pipeliner.run(name, keys, args)
