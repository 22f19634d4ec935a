"""The Publisher's way straight into Redis: ``Publisher("redis://…")``, no node in the path.

It runs the broker's own publish script (``brokers/redis_scripts.py``), so a publication
gets its offset, epoch and history exactly as if a node had made it, and every node
subscribed to the channel delivers it. What a namespace keeps (history size and TTL) is the
hub's configuration: pass the hub's (``Publisher("redis://…", config=load_config(path))``)
or the defaults apply. A repeated idempotency key is answered with the first publication
(``duplicate``), so the Publisher's retries stay safe here too.

Blocking calls share one redis-py client (thread-safe, pooled); asyncio calls get, per
event loop (``LoopLocal``), the shards a node has (``RedisBackend``), whose scripts go to
Redis pipelined on a connection of their own (``Commands``): what a loop publishes in one
iteration is one write, in order.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from tidings.brokers.redis_settings import RedisSettings, jump_hash, url_options
from tidings.core.broker import PublishOptions
from tidings.core.channels import Namespaces, validate_channel
from tidings.exceptions import BrokerError, BrokerUnavailable, InvalidChannel, PublishError

from .transport import Call, LoopLocal

if TYPE_CHECKING:
    from tidings.config import Config

__all__ = ["RedisTransport"]


def _clients(settings: RedisSettings) -> list[Any]:
    """One blocking redis-py client per shard (the Cluster or the Sentinel master: one)."""
    import redis

    from tidings.brokers.redis_backend import client_kwargs

    mod: Any = redis  # its cluster and sentinel parts are untyped
    s = settings
    nodes = [url_options(u) for u in s.urls]
    kwargs = client_kwargs(nodes[0], s, asynchronous=False)
    if s.cluster:
        startup = [mod.cluster.ClusterNode(o["host"], o["port"]) for o in nodes]
        return [mod.RedisCluster(startup_nodes=startup, **kwargs)]
    if s.sentinel_master:
        extra = {"password": s.sentinel_password} if s.sentinel_password else {}
        sentinels = [(o["host"], o["port"]) for o in nodes]
        sentinel = mod.sentinel.Sentinel(sentinels, sentinel_kwargs=extra, **kwargs)
        return [sentinel.master_for(s.sentinel_master)]
    made = []
    for options in nodes:
        kwargs = client_kwargs(options, s, asynchronous=False)
        made.append(mod.Redis(host=options["host"], port=options["port"], **kwargs))
    return made


class RedisTransport:
    """Publishes into the Redis deployment of ``url`` (or of ``config``, when it names one:
    several shards, a Cluster, Sentinel)."""

    def __init__(self, url: str, *, config: Config | None = None, timeout: float = 10.0) -> None:
        from tidings.brokers.redis_scripts import PUBLISH_SCRIPT

        if config is not None and config.broker != "memory":
            settings = config.redis_settings("tidings-publisher")
            assert settings is not None
        else:
            url_options(url)
            settings = RedisSettings(urls=(url,), node_name="tidings-publisher", timeout=timeout)
        self.settings = settings
        self.namespaces = config.channel_namespaces() if config is not None else Namespaces()
        self.script = PUBLISH_SCRIPT
        self._lock = threading.Lock()
        self._sync: list[Any] | None = None
        self._pools: LoopLocal[Any] = LoopLocal(self._backend, _aclose)

    def _backend(self) -> Any:
        """The node's own shards (``RedisBackend``), for their script connections only:
        never started, so no PUB/SUB connection is made."""
        from tidings.brokers.redis_backend import RedisBackend

        return RedisBackend(self.settings)

    def _prepare(self, call: Call) -> tuple[int, list[str], list[Any]]:
        from tidings.brokers.redis import publish_args

        if call.method != "publish":
            raise ValueError(f"RedisTransport can't {call.method}")
        try:
            validate_channel(call.channel)
        except InvalidChannel as exc:
            raise PublishError(f"publish refused: {exc}", 400, reason=str(exc)) from None
        data = call.data
        if call.is_json:  # as a node does: CR/LF are only whitespace in JSON
            data = data.replace(b"\r", b"").replace(b"\n", b"")
        options = PublishOptions.of(
            self.namespaces.options(call.channel),
            idempotency_key=call.idempotency_key,
            exclude_client=call.params.get("exclude_client", ""),
        )
        s = self.settings
        shard = 0
        if len(s.urls) > 1 and not (s.cluster or s.sentinel_master):
            shard = jump_hash(call.channel.encode(), len(s.urls))
        keys, args = publish_args(
            s.prefix,
            call.channel,
            data,
            options,
            cluster=s.cluster,
            is_json=call.is_json,
            event=call.event,
        )
        return shard, keys, args

    def _answer(self, call: Call, reply: Any) -> dict[str, Any]:
        from tidings.brokers.redis import publish_result

        result = publish_result(reply)
        offset, epoch = result.position.offset, result.position.epoch
        return {
            "channel": call.channel,
            "offset": offset,
            "epoch": epoch,
            "id": f"{call.channel}:{offset}:{epoch}",
            "subscribers": 0,  # not known here: the nodes deliver it
            "duplicate": result.duplicate,
        }

    def call(self, call: Call) -> dict[str, Any]:
        from redis import exceptions as rexc

        shard, keys, args = self._prepare(call)
        with self._lock:
            if self._sync is None:
                self._sync = [c.register_script(self.script) for c in _clients(self.settings)]
            script = self._sync[shard]
        try:
            reply = script(keys=keys, args=args)
        except (rexc.RedisError, OSError) as exc:
            raise _failure(exc) from None
        return self._answer(call, reply)

    async def acall(self, call: Call) -> dict[str, Any]:
        shard, keys, args = self._prepare(call)
        backend = await self._pools.get()
        try:
            reply = await backend.shards[shard].pipeliner.run("publish", keys, args)
        except BrokerError as exc:
            raise _failure(exc) from None
        return self._answer(call, reply)

    def close(self) -> None:
        with self._lock:
            scripts, self._sync = self._sync, None
        for script in scripts or []:
            script.registered_client.close()

    async def aclose(self) -> None:
        self.close()
        await self._pools.aclose_current()


async def _aclose(backend: Any) -> None:
    await backend.aclose()


def _failure(exc: BaseException) -> PublishError:
    from redis import exceptions as rexc

    transient = isinstance(
        exc, BrokerUnavailable | rexc.ConnectionError | rexc.TimeoutError | OSError
    )
    return PublishError(f"can't publish to redis: {exc}", reason=str(exc), retryable=transient)
