"""The client protocol's commands besides connecting and subscribing.

Publish, presence and history are checked against the namespace options as Centrifugo
does: "subscriber" rights need a subscription to the channel, "client" rights a user id,
"anonymous" rights nothing; a connection capability (``pub``, ``prs``, ``hst``) for the
channel allows it too. A publish then goes through the ``on_publish`` hooks (which may
refuse it, replace its data, or say how to publish it: ``hooks.Publish``); RPC and send go
to the ``on_rpc`` and ``on_message`` hooks (``hooks.py``): Python functions, no proxy
needed. Each of the three is a line of the
message log where one is configured.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tidings.exceptions import DisconnectError, HookError, Reject, ReplyError
from tidings.protocol.centrifuge import codes
from tidings.protocol.envelope import is_json_text

from .broker import TOP, HistoryQuery
from .client_types import info_dict, pub_dict, refusal
from .conn import NO_CHANGE, decode_data
from .permissions import cap_allows, channel_options
from .publication import StreamPosition

if TYPE_CHECKING:
    from .channels import ChannelOptions
    from .client import Client

__all__ = [
    "MAX_HISTORY_LIMIT",
    "history",
    "presence",
    "presence_stats",
    "publish",
    "rpc",
    "send",
]

log = logging.getLogger("tidings.client")

MAX_HISTORY_LIMIT = 300  # Centrifugo's history_max_publication_limit


def _allowed(
    client: Client,
    channel: str,
    capability: str,
    subscriber: bool,
    for_client: bool,
    anon: bool,
) -> bool:
    if client.options.insecure or cap_allows(client, channel, capability):
        return True
    if subscriber and channel in client.subs:
        return True
    if for_client and client.user != "":
        return True
    return anon


async def publish(client: Client, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
    channel = params.get("channel")
    opts = channel_options(client, channel)
    assert isinstance(channel, str)
    subscriber = opts.allow_publish_for_subscriber and (
        client.user != "" or opts.allow_publish_for_anonymous
    )
    for_client = opts.allow_publish_for_client and (
        client.user != "" or opts.allow_publish_for_anonymous
    )
    if not _allowed(client, channel, "pub", subscriber, for_client, False):
        raise ReplyError(codes.PERMISSION_DENIED)
    data = params.get("data", b"")
    if not isinstance(data, bytes):
        raise ReplyError(codes.BAD_REQUEST)
    is_json = client.transport.codec.name == "json" or is_json_text(data)
    node, conn = client.node, client.conn
    how = NO_CHANGE
    if conn is not None:
        if node.message_log is not None:
            node.message_log.write("publish", conn, channel, data)
        if node.hooks.has("publish"):
            data, is_json, how = await node.hooks.publish(conn, channel, data, is_json)
    await node.publish(
        channel,
        data,
        is_json=is_json,
        info=client.client_info(channel),
        **how.options(),
    )
    return {}


def _presence_opts(client: Client, params: dict[str, Any]) -> tuple[str, ChannelOptions]:
    channel = params.get("channel")
    opts = channel_options(client, channel)
    assert isinstance(channel, str)
    if not opts.presence:
        raise ReplyError(codes.NOT_AVAILABLE)
    if not _allowed(
        client,
        channel,
        "prs",
        opts.allow_presence_for_subscriber,
        opts.allow_presence_for_client,
        opts.allow_presence_for_anonymous,
    ):
        raise ReplyError(codes.PERMISSION_DENIED)
    return channel, opts


async def presence(client: Client, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
    channel, _ = _presence_opts(client, params)
    clients = await client.node.presence_manager.presence(channel)
    return {"presence": {cid: info_dict(info) for cid, info in clients.items()}}


async def presence_stats(client: Client, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
    channel, _ = _presence_opts(client, params)
    stats = await client.node.presence_manager.stats(channel)
    return {"num_clients": stats.num_clients, "num_users": stats.num_users}


async def history(client: Client, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
    channel = params.get("channel")
    opts = channel_options(client, channel)
    assert isinstance(channel, str)
    if opts.history_size <= 0 or opts.history_ttl <= 0:
        raise ReplyError(codes.NOT_AVAILABLE)
    if not _allowed(
        client,
        channel,
        "hst",
        opts.allow_history_for_subscriber,
        opts.allow_history_for_client,
        opts.allow_history_for_anonymous,
    ):
        raise ReplyError(codes.PERMISSION_DENIED)
    limit = params.get("limit", 0)
    since = params.get("since")
    reverse = bool(params.get("reverse", False))
    if not isinstance(limit, int) or (since is not None and not isinstance(since, dict)):
        raise ReplyError(codes.BAD_REQUEST)
    # limit: 0 = only the stream position, negative = everything held (capped).
    wanted = MAX_HISTORY_LIMIT if limit < 0 else min(limit, MAX_HISTORY_LIMIT)
    position = None
    if since is not None:
        offset, epoch = since.get("offset", 0), since.get("epoch", "")
        if not isinstance(offset, int) or not isinstance(epoch, str):
            raise ReplyError(codes.BAD_REQUEST)
        position = StreamPosition(offset, epoch)
    query = HistoryQuery(since=position, limit=wanted, reverse=reverse) if wanted else TOP
    result = await client.node.history(channel, query)
    pos = result.position
    if position is not None and position.epoch and position.epoch != pos.epoch:
        raise ReplyError(codes.UNRECOVERABLE_POSITION)
    return _history_result(client, result.publications, pos.offset, pos.epoch)


def _history_result(client: Client, pubs: list[Any], offset: int, epoch: str) -> dict[str, Any]:
    codec = client.transport.codec
    return {"publications": [pub_dict(p, codec) for p in pubs], "epoch": epoch, "offset": offset}


def _payload(client: Client, params: dict[str, Any]) -> tuple[bytes, bool]:
    data = params.get("data", b"")
    if not isinstance(data, bytes):
        raise ReplyError(codes.BAD_REQUEST)
    return data, client.transport.codec.name == "json" or is_json_text(data)


async def rpc(client: Client, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """The ``on_rpc`` hooks of the method answer; none: 104. ``Reject`` is an error with
    the hook's own code and reason."""
    method = params.get("method", "")
    data, is_json = _payload(client, params)
    node, conn = client.node, client.conn
    if conn is None or not isinstance(method, str):
        raise ReplyError(codes.METHOD_NOT_FOUND)
    if node.message_log is not None:
        node.message_log.write("rpc", conn, None, data)
    found, result = await node.hooks.rpc(conn, method, data, is_json)
    if not found:
        raise ReplyError(codes.METHOD_NOT_FOUND)
    if result is None:
        return {}
    return {"data": client.transport.codec.payload(*result)}


async def send(client: Client, cmd_id: int, params: dict[str, Any]) -> None:
    """An asynchronous message: the ``on_message`` hooks get it (channel None); without
    any, as in Centrifugo without a proxy, the connection is closed with 3508. A failing
    hook is logged (a send has no reply to carry an error)."""
    node, conn = client.node, client.conn
    if conn is not None and node.message_log is not None:
        node.message_log.write("send", conn, None, params.get("data", b""))
    if conn is None or not node.hooks.has("message"):
        raise DisconnectError(codes.NOT_AVAILABLE_DISCONNECT)
    data, is_json = _payload(client, params)
    try:
        await node.hooks.run("message", conn, None, decode_data(data, is_json))
    except Reject as exc:
        error = refusal(exc)
        if isinstance(error, DisconnectError):
            raise error from None
        log.info("client %s: send refused by a hook (%d)", client.id, exc.code)
    except HookError:
        pass  # logged where it failed
    return None
