"""Publishing straight into Redis, with no tidings node in the path.

It runs the broker's own publish script (``brokers/redis_scripts.py``), so the publication
gets its offset, epoch and history exactly as if a node had made it, and every node
subscribed to the channel delivers it. What a namespace keeps (history size and TTL) is
the hub's configuration: give the same configuration file (``config=``) as the hub's, or
the defaults apply.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import TYPE_CHECKING, Any

from tidings.brokers.redis_settings import RedisSettings, jump_hash, url_options
from tidings.core.broker import PublishOptions
from tidings.core.channels import Namespaces, validate_channel
from tidings.exceptions import PublishError

if TYPE_CHECKING:
    from tidings.config import Config

__all__ = ["RedisPublishing"]


class RedisPublishing:
    """Sync and async publishing into the Redis deployment ``settings`` names.

    One sync client (thread-safe, pooled) and one async client per event loop, made when
    first needed, so it works from plain code, from any number of loops, and across
    ``asyncio.run`` calls.
    """

    def __init__(self, settings: RedisSettings, namespaces: Namespaces | None = None) -> None:
        from tidings.brokers.redis_scripts import PUBLISH_SCRIPT

        self.settings = settings
        self.namespaces = namespaces or Namespaces()
        self.script = PUBLISH_SCRIPT
        self._sync: list[Any] | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, config: Config | None = None) -> RedisPublishing:
        """For ``redis://…`` (a single server), or the Redis deployment of ``config``."""
        if config is not None and config.broker != "memory":
            settings = config.redis_settings("tidings-publisher")
            assert settings is not None
        else:
            url_options(url)
            settings = RedisSettings(urls=(url,), node_name="tidings-publisher")
        namespaces = config.channel_namespaces() if config is not None else None
        return cls(settings, namespaces)

    def _clients(self, asynchronous: bool) -> list[Any]:
        import redis
        import redis.asyncio as aioredis

        s = self.settings
        made = []
        mod: Any = aioredis if asynchronous else redis
        urls = s.urls if not (s.cluster or s.sentinel_master) else s.urls[:1]
        for url in urls:
            options = url_options(url)
            kwargs: dict[str, Any] = {
                "username": options["username"],
                "password": options["password"],
                "socket_timeout": s.timeout,
                "socket_connect_timeout": s.connect_timeout,
            }
            if options.get("ssl"):
                kwargs["ssl"] = True
                for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
                    if key in options:
                        kwargs[key] = options[key]
            if s.cluster:
                nodes = [url_options(u) for u in s.urls]
                cluster_node = mod.cluster.ClusterNode
                made.append(
                    mod.RedisCluster(
                        startup_nodes=[cluster_node(o["host"], o["port"]) for o in nodes],
                        **kwargs,
                    )
                )
            elif s.sentinel_master:
                sentinels = [(o["host"], o["port"]) for o in map(url_options, s.urls)]
                extra = {"password": s.sentinel_password} if s.sentinel_password else {}
                sentinel = mod.sentinel.Sentinel(sentinels, sentinel_kwargs=extra, **kwargs)
                made.append(sentinel.master_for(s.sentinel_master))
            else:
                made.append(mod.Redis(host=options["host"], port=options["port"], **kwargs))
        # redis-py's Script runs EVALSHA and loads the script again after a restart.
        return [client.register_script(self.script) for client in made]

    def _prepare(
        self, channel: str, data: bytes, is_json: bool, event: str | None, key: str
    ) -> tuple[int, list[str], list[Any]]:
        from tidings.brokers.redis import publish_args

        validate_channel(channel)
        if is_json:
            data = data.replace(b"\r", b"").replace(b"\n", b"")
        options = PublishOptions.of(self.namespaces.options(channel), idempotency_key=key)
        shard = 0 if len(self.settings.urls) == 1 or self.settings.cluster else None
        if shard is None:
            shard = jump_hash(channel.encode(), len(self.settings.urls))
        if self.settings.sentinel_master:
            shard = 0
        keys, args = publish_args(
            self.settings.prefix,
            channel,
            data,
            options,
            cluster=self.settings.cluster,
            is_json=is_json,
            event=event,
        )
        return shard, keys, args

    def publish(
        self, channel: str, data: bytes, is_json: bool, event: str | None, key: str
    ) -> tuple[int, str, bool]:
        """(offset, epoch, duplicate) of the publication."""
        from redis import exceptions as rexc

        from tidings.brokers.redis import publish_result

        shard, keys, args = self._prepare(channel, data, is_json, event, key)
        with self._lock:
            if self._sync is None:
                self._sync = self._clients(False)
        script = self._sync[shard]
        try:
            reply = script(keys=keys, args=args)
        except rexc.RedisError as exc:
            raise PublishError(f"can't publish to redis: {exc}") from None
        result = publish_result(reply)
        return result.position.offset, result.position.epoch, result.duplicate

    async def apublish(
        self, channel: str, data: bytes, is_json: bool, event: str | None, key: str
    ) -> tuple[int, str, bool]:
        """The async twin of ``publish``; what is published in one loop iteration goes to
        Redis in one pipeline, in order."""
        from tidings.brokers.redis import publish_result
        from tidings.brokers.redis_backend import Pipeliner
        from tidings.exceptions import BrokerError

        shard, keys, args = self._prepare(channel, data, is_json, event, key)
        loop = asyncio.get_running_loop()
        pipeliners = self._async.get(loop)
        if pipeliners is None:
            scripts = self._clients(True)
            sha = scripts[0].sha
            pipeliners = self._async[loop] = [
                Pipeliner(script.registered_client, {"publish": sha}, "redis") for script in scripts
            ]
        try:
            reply = await pipeliners[shard].run("publish", keys, args)
        except BrokerError as exc:
            raise PublishError(f"can't publish to redis: {exc}") from None
        result = publish_result(reply)
        return result.position.offset, result.position.epoch, result.duplicate

    def close(self) -> None:
        if self._sync is not None:
            for script in self._sync:
                script.registered_client.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        clients = self._async.pop(asyncio.get_running_loop(), None)
        for pipeliner in clients or []:
            await pipeliner.client.aclose()
