"""Commands a node runs for the cluster (``Node.handle_control``), sent by the controller.

Every command is a JSON object with a ``"method"``. Bytes travel as base64 (``b64data``,
``b64info``). Connections are chosen by ``user``, narrowed by ``client`` (client id) and
``session`` (the connection's session); a node without such connections does nothing.
``message`` is for one connection by id (client protocol or simple stream) or, with
``all``, every connection; it answers how many it reached.
Unknown methods and malformed commands answer ``{"error": ...}`` and are logged.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tidings.exceptions import BrokerError, CommandError, DecodeError, HookError, Reject
from tidings.protocol.centrifuge import codes
from tidings.protocol.centrifuge.codec import JSON, PROTOBUF

from .publication import StreamPosition

if TYPE_CHECKING:
    from .client import Client
    from .node import Node

__all__ = [
    "METHODS",
    "b64",
    "current_rss",
    "handle",
    "unb64",
]

log = logging.getLogger("tidings.control")


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("expected base64 text") from None


def current_rss() -> int:
    """This process's resident memory in bytes (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _clients(node: Node, command: dict[str, Any]) -> list[Client]:
    clients = list(node.users.get(str(command.get("user", "")), ()))
    if command.get("client"):
        clients = [c for c in clients if c.id == command["client"]]
    if command.get("session"):
        clients = [c for c in clients if c.session == command["session"]]
    return clients


async def _disconnect(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    disconnect = codes.Disconnect(int(command["code"]), str(command.get("reason", "")))
    whitelist = set(command.get("whitelist") or ())
    before = command.get("before")  # only connections that connected before then
    for client in _clients(node, command):
        if client.id not in whitelist and (before is None or client.connected_at <= before):
            client.disconnect(disconnect)
    return {}


async def _subscribe(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    from .client_subscribe import server_subscribe

    since = command.get("since")
    position = None if since is None else StreamPosition(int(since[0]), str(since[1]))
    info, data = unb64(command.get("b64info")), unb64(command.get("b64data"))
    channel = str(command["channel"])
    for client in _clients(node, command):
        try:
            await server_subscribe(
                client,
                channel,
                chan_info=info,
                data=data,
                since=position,
                override=command.get("override"),
            )
        except (CommandError, Reject, HookError, BrokerError) as exc:
            # One connection's refusal (a hook, a closed connection) leaves the others.
            log.info("server subscribe of client %s to %s: %r", client.id, channel, exc)
    return {}


async def _unsubscribe(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    from .client_subscribe import server_unsubscribe

    for client in _clients(node, command):
        server_unsubscribe(client, str(command["channel"]), codes.UNSUBSCRIBE_SERVER)
    return {}


async def _refresh(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    expire_at = int(command.get("expire_at") or 0)
    info = unb64(command.get("b64info"))
    for client in _clients(node, command):
        if command.get("expired") or 0 < expire_at <= node.clock.time():
            client.disconnect(codes.CONNECTION_EXPIRED)
            continue
        client.exp = float(expire_at)
        if info is not None:
            client.info = info
        push: dict[str, Any] = {}
        client.set_expiry(push)
        client.send_push({"refresh": push})
    return {}


async def _info(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    return {
        "uid": node.id,
        "name": node.name,
        "version": node.version,
        "num_clients": len(node.clients),
        "num_users": len(node.users),
        "num_subs": sum(len(c.subs) for c in node.clients.values()),
        "num_channels": sum(1 for _ in node.hub.channels()),
        "uptime": int(time.time() - node.started),
        "process": {"rss": current_rss()},
    }


async def _channels(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    pattern = str(command.get("pattern") or "*")
    hub = node.hub
    names = [ch for ch in hub.channels() if fnmatch.fnmatchcase(ch, pattern)]
    return {"channels": {ch: hub.count(ch) for ch in names}}


async def _message(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    """An out-of-band message: to the connection ``client``, or with ``all`` to every one."""
    data = unb64(command.get("b64data")) or b""
    is_json = bool(command.get("json", True))
    if command.get("all"):
        return {"delivered": node.message_all_local(data, is_json)}
    client = command.get("client")
    if not isinstance(client, str):
        raise ValueError("client: expected a connection id")
    return {"delivered": int(node.message_local(client, data, is_json))}


async def _emulation(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    client = node.sessions.get(str(command.get("session", "")))
    if client is None or not client.transport.emulated:
        return {"found": False}
    codec = PROTOBUF if command.get("codec") == "protobuf" else JSON
    try:
        commands = codec.decode_commands(unb64(command.get("b64data")) or b"")
    except DecodeError:
        return {"found": True, "bad": True}
    client.feed(commands)
    return {"found": True}


METHODS: dict[str, Callable[[Node, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "disconnect": _disconnect,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "refresh": _refresh,
    "info": _info,
    "channels": _channels,
    "emulation": _emulation,
    "message": _message,
}


async def handle(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    """Run one command; never raises for a command from another node."""
    method = METHODS.get(str(command.get("method")))
    if method is None:
        log.warning("unknown control command %r", command.get("method"))
        return {"error": "unknown method"}
    try:
        return await method(node, command)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("malformed control command %s: %r", command.get("method"), exc)
        return {"error": "malformed command"}
