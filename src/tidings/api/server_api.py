"""Methods of the server API, with Centrifugo's request and response shapes.

Every call answers ``{"result": {...}}`` or ``{"error": {"code", "message"}}`` (HTTP 200 in
both cases; a missing or wrong API key is HTTP 401). ``batch`` answers ``{"replies": [...]}``
with one ``{"<method>": result}`` or ``{"error": ...}`` per command, in order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import logging
import os
import resource
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tidings.core import client_subscribe
from tidings.core.channels import ChannelOptions, validate_channel
from tidings.core.client_types import info_dict
from tidings.core.node import Node
from tidings.core.publication import Publication
from tidings.exceptions import InvalidChannel
from tidings.protocol.centrifuge import codes
from tidings.protocol.envelope import payload_json

__all__ = ["ApiError", "ServerApi"]

log = logging.getLogger("tidings.api")

IDEMPOTENCY_TTL = 300.0
IDEMPOTENCY_MAX = 100_000
MAX_HISTORY = 10_000


def current_rss() -> int:
    """This process's resident memory in bytes (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ApiError(Exception):
    def __init__(self, error: codes.Error) -> None:
        super().__init__(error.message)
        self.error = error


BAD_REQUEST = ApiError(codes.BAD_REQUEST)


def _str(params: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = params.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise ApiError(codes.BAD_REQUEST)
    return value


def _json_or_b64(params: dict[str, Any], name: str) -> tuple[bytes, bool] | None:
    """``name`` (any JSON) or ``b64<name>`` (base64 bytes) as (payload, is_json)."""
    b64 = params.get("b64" + name)
    if b64 is not None:
        if not isinstance(b64, str):
            raise BAD_REQUEST
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise BAD_REQUEST from None
        try:
            orjson.loads(raw)
            return raw, True
        except orjson.JSONDecodeError:
            return raw, False
    if name not in params:
        return None
    return orjson.dumps(params[name]), True


def _position(since: dict[str, Any]) -> tuple[int, str]:
    """A ``{"offset", "epoch"}`` stream position from a request; 107 when malformed."""
    offset, epoch = since.get("offset", 0), since.get("epoch", "")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise BAD_REQUEST
    if not isinstance(epoch, str):
        raise BAD_REQUEST
    return offset, epoch


class ServerApi:
    """Runs server API methods against a node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._idempotent: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()
        self.methods: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "publish": self.publish,
            "broadcast": self.broadcast,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "disconnect": self.disconnect,
            "refresh": self.refresh,
            "presence": self.presence,
            "presence_stats": self.presence_stats,
            "history": self.history,
            "history_remove": self.history_remove,
            "channels": self.channels,
            "info": self.info,
        }

    async def call(self, method: str, params: Any) -> dict[str, Any]:
        """One method call: ``{"result": ...}`` or ``{"error": ...}``."""
        if method == "batch":
            return await self.batch(params)
        handler = self.methods.get(method)
        if handler is None:
            return {"error": codes.METHOD_NOT_FOUND.reply()}
        if not isinstance(params, dict):
            return {"error": codes.BAD_REQUEST.reply()}
        try:
            return {"result": await handler(params)}
        except ApiError as exc:
            return {"error": exc.error.reply()}
        except Exception:
            log.exception("server API %s failed", method)
            return {"error": codes.INTERNAL.reply()}

    async def batch(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict) or not isinstance(params.get("commands"), list):
            return {"error": codes.BAD_REQUEST.reply()}
        commands = params["commands"]

        async def one(command: Any) -> dict[str, Any]:
            if not isinstance(command, dict) or len(command) != 1:
                return {"error": codes.BAD_REQUEST.reply()}
            ((method, args),) = command.items()
            if method == "batch":
                return {"error": codes.BAD_REQUEST.reply()}
            answer = await self.call(method, args)
            return {method: answer["result"]} if "result" in answer else answer

        if params.get("parallel"):
            replies = list(await asyncio.gather(*(one(c) for c in commands)))
        else:
            replies = [await one(c) for c in commands]
        return {"replies": replies}

    # helpers
    def _channel(self, params: dict[str, Any]) -> tuple[str, ChannelOptions]:
        channel = _str(params, "channel")
        try:
            validate_channel(channel)
        except InvalidChannel:
            raise BAD_REQUEST from None
        opts = self.node.namespaces.find(channel)
        if opts is None:
            raise ApiError(codes.UNKNOWN_CHANNEL)
        return channel, opts

    def _pub(self, pub: Publication) -> dict[str, Any]:
        body: dict[str, Any] = {
            "data": orjson.Fragment(payload_json(pub.data, pub.is_json)),
            "offset": pub.offset,
        }
        if pub.tags:
            body["tags"] = pub.tags
        if pub.info is not None:
            info = info_dict(pub.info)
            for key in ("conn_info", "chan_info"):
                if key in info:
                    info[key] = orjson.Fragment(info[key])
            body["info"] = info
        return body

    def _clients(self, params: dict[str, Any]) -> list[Any]:
        user = _str(params, "user", required=False)
        client_id = params.get("client", "")
        session = params.get("session", "")
        clients = list(self.node.users.get(user, ()))
        if client_id:
            clients = [c for c in clients if c.id == client_id]
        if session:
            clients = [c for c in clients if c.id == session]
        return clients

    # methods
    async def publish(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, _ = self._channel(params)
        return await self._publish_one(channel, params)

    async def _publish_one(self, channel: str, params: dict[str, Any]) -> dict[str, Any]:
        payload = _json_or_b64(params, "data")
        if payload is None:
            raise BAD_REQUEST
        tags = params.get("tags")
        if tags is not None and not (
            isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
        ):
            raise BAD_REQUEST
        key = params.get("idempotency_key") or ""
        if key:
            cached = self._idempotent_result(channel, key)
            if cached is not None:
                return cached
        pub, _ = await self.node.publish(
            channel,
            payload[0],
            is_json=payload[1],
            tags=tags,
            skip_history=bool(params.get("skip_history")),
            delta=bool(params.get("delta")),
        )
        result = {"offset": pub.offset, "epoch": pub.epoch}
        if key:
            self._remember(channel, key, result)
        return result

    def _idempotent_result(self, channel: str, key: str) -> dict[str, Any] | None:
        now = time.monotonic()
        while self._idempotent:
            oldest = next(iter(self._idempotent.values()))
            if now - oldest[0] < IDEMPOTENCY_TTL:
                break
            self._idempotent.popitem(last=False)
        entry = self._idempotent.get((channel, key))
        return entry[1] if entry is not None else None

    def _remember(self, channel: str, key: str, result: dict[str, Any]) -> None:
        self._idempotent[(channel, key)] = (time.monotonic(), result)
        while len(self._idempotent) > IDEMPOTENCY_MAX:
            self._idempotent.popitem(last=False)

    async def broadcast(self, params: dict[str, Any]) -> dict[str, Any]:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise BAD_REQUEST
        responses = []
        for channel in channels:
            answer = await self.call("publish", {**params, "channel": channel, "channels": None})
            responses.append(answer)
        return {"responses": responses}

    async def subscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, _ = self._channel(params)
        info = _json_or_b64(params, "info")
        data = _json_or_b64(params, "data")
        since = params.get("recover_since")
        position = None
        if isinstance(since, dict):
            position = _position(since)
        for client in self._clients(params):
            await client_subscribe.server_subscribe(
                client,
                channel,
                chan_info=info[0] if info else None,
                data=data[0] if data else None,
                since=position,
                override=params.get("override"),
            )
        return {}

    async def unsubscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, _ = self._channel(params)
        for client in self._clients(params):
            client_subscribe.server_unsubscribe(client, channel, codes.UNSUBSCRIBE_SERVER)
        return {}

    async def disconnect(self, params: dict[str, Any]) -> dict[str, Any]:
        custom = params.get("disconnect")
        disconnect = codes.FORCE_DISCONNECT
        if isinstance(custom, dict) and custom.get("code"):
            code = custom["code"]
            if not isinstance(code, int) or not 3000 <= code <= 4999:
                raise BAD_REQUEST
            disconnect = codes.Disconnect(code, str(custom.get("reason", "")))
        whitelist = set(params.get("whitelist") or ())
        for client in self._clients(params):
            if client.id not in whitelist:
                client.disconnect(disconnect)
        return {}

    async def refresh(self, params: dict[str, Any]) -> dict[str, Any]:
        """As Centrifugo: ``expired`` or an ``expire_at`` already past disconnects (3005);
        otherwise the connection's expiry becomes ``expire_at`` (0: none) and the client
        gets a ``refresh`` push saying so."""
        expire_at = params.get("expire_at") or 0
        if not isinstance(expire_at, int) or isinstance(expire_at, bool):
            raise BAD_REQUEST
        info = _json_or_b64(params, "info")
        for client in self._clients(params):
            if params.get("expired") or 0 < expire_at <= time.time():
                client.disconnect(codes.CONNECTION_EXPIRED)
                continue
            client.exp = float(expire_at)
            if info is not None:
                client.info = info[0]
            push: dict[str, Any] = {}
            client.set_expiry(push)
            client.send_push({"refresh": push})
        return {}

    async def presence(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(params)
        if not opts.presence:
            raise ApiError(codes.NOT_AVAILABLE)
        clients = await self.node.presence_manager.presence(channel)
        body = {}
        for cid, info in clients.items():
            item = info_dict(info)
            for key in ("conn_info", "chan_info"):
                if key in item:
                    item[key] = orjson.Fragment(item[key])
            body[cid] = item
        return {"presence": body}

    async def presence_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(params)
        if not opts.presence:
            raise ApiError(codes.NOT_AVAILABLE)
        num_clients, num_users = await self.node.presence_manager.stats(channel)
        return {"num_clients": num_clients, "num_users": num_users}

    async def history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(params)
        if opts.history_size <= 0 or opts.history_ttl <= 0:
            raise ApiError(codes.NOT_AVAILABLE)
        limit = params.get("limit") or 0
        if not isinstance(limit, int):
            raise BAD_REQUEST
        wanted = MAX_HISTORY if limit < 0 else min(limit, MAX_HISTORY)
        reverse = bool(params.get("reverse"))
        broker = self.node.broker
        since = params.get("since")
        since_offset = None
        if isinstance(since, dict):
            since_offset, epoch = _position(since)
            top = (await broker.history(channel, limit=0)).position
            if epoch and epoch != top.epoch:
                raise ApiError(codes.UNRECOVERABLE_POSITION)
        if since_offset is not None and reverse:
            result = await broker.history(channel)
            older = [p for p in result.publications if p.offset < since_offset]
            pubs = older[::-1][:wanted]
        else:
            result = await broker.history(
                channel, since_offset=since_offset, limit=wanted, reverse=reverse
            )
            pubs = result.publications
        pos = result.position
        return {
            "publications": [self._pub(p) for p in pubs],
            "offset": pos.offset,
            "epoch": pos.epoch,
        }

    async def history_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, opts = self._channel(params)
        if opts.history_size <= 0 or opts.history_ttl <= 0:
            raise ApiError(codes.NOT_AVAILABLE)
        await self.node.broker.remove_history(channel)
        return {}

    async def channels(self, params: dict[str, Any]) -> dict[str, Any]:
        pattern = params.get("pattern") or "*"
        if not isinstance(pattern, str):
            raise BAD_REQUEST
        hub = self.node.hub
        names = [ch for ch in hub.channels() if fnmatch.fnmatchcase(ch, pattern)]
        return {"channels": {ch: {"num_clients": hub.count(ch)} for ch in names}}

    async def info(self, params: dict[str, Any]) -> dict[str, Any]:
        node = self.node
        rss = current_rss()
        num_subs = sum(len(c.subs) for c in node.clients.values())
        return {
            "nodes": [
                {
                    "uid": node.id,
                    "name": f"tidings-{os.getpid()}",
                    "version": node.version,
                    "num_clients": len(node.clients),
                    "num_users": len(node.users),
                    "num_subs": num_subs,
                    "num_channels": sum(1 for _ in node.hub.channels()),
                    "uptime": int(time.time() - node.started),
                    "process": {"rss": rss},
                }
            ]
        }
