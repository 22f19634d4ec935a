"""Subscribing a client: permissions, tokens, recovery, presence, join/leave.

Rules follow Centrifugo's: a channel's namespace must exist (102); a subscription token
admits its channel; so does a connection capability ``sub`` (``permissions.Caps``);
otherwise ``$`` channels need a token, ``#`` channels admit the users listed after ``#``
where the namespace allows user-limited channels, and the namespace's
``allow_subscribe_for_*`` options decide (103). A resubscribing client that sends its
position gets every publication it missed in the reply with ``recovered: true`` — or none
and ``recovered: false``; never some.
Every subscription (the client's, the connect's, the server API's) passes the
``on_subscribe`` hooks first; leaving while connected runs ``on_unsubscribe``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tidings.exceptions import (
    DisconnectError,
    HookError,
    InvalidToken,
    Reject,
    ReplyError,
    TokenExpired,
)
from tidings.protocol.centrifuge import codes

from .channels import ChannelOptions
from .client_types import ServerSub, Subscription, pub_dict
from .conn import encode_data
from .permissions import (
    apply_override,
    cap_allows,
    channel_options,
    has_history_access,
    user_allowed,
)
from .publication import StreamPosition

if TYPE_CHECKING:
    from .client import Client
    from .subscriptions import SubscribeHandle

__all__ = [
    "FLAG_REJECT_UNRECOVERED",
    "caps_changed",
    "go_live",
    "leave",
    "on_gap",
    "presence_leave",
    "schedule_expiry",
    "server_side_subscribe",
    "server_subscribe",
    "server_unsubscribe",
    "sub_refresh",
    "subscribe",
    "unsubscribe",
    "unsubscribed",
]

log = logging.getLogger("tidings.client")

FLAG_REJECT_UNRECOVERED = 2  # SubscribeRequest.flag bit: answer 112 instead of recovered=false


def _check_subscribe_token(
    client: Client, channel: str, token: str, *, refreshing: bool = False
) -> tuple[bytes | None, float, dict[str, Any]]:
    """Verify a subscription token; return its channel info, expiry time and option
    overrides.

    A bad token is error 103 when subscribing but a disconnect (3500) on sub_refresh."""
    verifier = client.node.token_verifier
    if verifier is None or not verifier.enabled:
        raise ReplyError(codes.PERMISSION_DENIED)
    try:
        claims = verifier.subscribe_token(token)
    except TokenExpired:
        raise ReplyError(codes.TOKEN_EXPIRED) from None
    except InvalidToken as exc:
        log.info("client %s: subscription token for %s: %s", client.id, channel, exc)
        if refreshing:
            raise DisconnectError(codes.INVALID_TOKEN) from None
        raise ReplyError(codes.PERMISSION_DENIED) from None
    if claims.channel != channel or claims.user != client.user:
        log.info("client %s: subscription token for another channel or user", client.id)
        raise DisconnectError(codes.INVALID_TOKEN)
    expire_at = claims.expire_at if claims.expire_at is not None else claims.exp
    return claims.info, float(expire_at or 0), claims.override


async def subscribe(client: Client, cmd_id: int, params: dict[str, Any]) -> None:
    channel = params.get("channel")
    if not isinstance(channel, str) or not channel:
        raise DisconnectError(codes.BAD_REQUEST_DISCONNECT)
    delta = params.get("delta", "")
    if delta and delta != "fossil":
        raise DisconnectError(codes.BAD_REQUEST_DISCONNECT)
    if channel in client.subs or channel in client.subscribing:
        raise ReplyError(codes.ALREADY_SUBSCRIBED)
    if len(client.subs) + len(client.subscribing) >= client.options.max_channels:
        raise ReplyError(codes.LIMIT_EXCEEDED)
    opts = channel_options(client, channel)
    if params.get("tf"):
        raise ReplyError(codes.BAD_REQUEST)  # tags filters are not offered
    token = params.get("token", "")
    chan_info: bytes | None = None
    expires_at = 0.0
    private = channel.startswith(client.options.private_prefix)
    user_limited = opts.allow_user_limited_channels and client.options.user_boundary in channel
    by_caps = False
    if token:
        chan_info, expires_at, override = _check_subscribe_token(client, channel, token)
        if expires_at and expires_at <= client.node.clock.time():
            raise ReplyError(codes.TOKEN_EXPIRED)
        opts = apply_override(opts, override)
    elif cap_allows(client, channel, "sub"):
        by_caps = True  # the connection's capabilities grant it, whatever the namespace says
    elif private:
        raise ReplyError(codes.PERMISSION_DENIED)
    elif user_limited:
        if not user_allowed(client, channel):
            raise ReplyError(codes.PERMISSION_DENIED)
    elif not (
        (
            opts.allow_subscribe_for_client
            and not user_limited
            and (client.user != "" or opts.allow_subscribe_for_anonymous)
        )
        or client.options.insecure
    ):
        raise ReplyError(codes.PERMISSION_DENIED)
    client.subscribing.add(channel)
    try:
        result, handle = await _subscribe(
            client, channel, opts, params, chan_info, expires_at, by_caps=by_caps
        )
    finally:
        client.subscribing.discard(channel)
    client.reply({"id": cmd_id, "subscribe": result})
    go_live(client, channel, handle)


async def _subscribe(
    client: Client,
    channel: str,
    opts: ChannelOptions,
    params: dict[str, Any],
    chan_info: bytes | None,
    expires_at: float,
    *,
    by_caps: bool = False,
) -> tuple[dict[str, Any], SubscribeHandle]:
    """Subscribe once allowed: a transaction. Every step that can fail (history, presence)
    runs before the subscription is committed to ``client.subs``; a failure aborts the
    handle and leaves nothing behind. The caller writes the reply, then ``go_live()``."""
    node = client.node
    sub_data: bytes | None = None
    if client.conn is not None and node.hooks.has("subscribe"):
        granted = await node.hooks.grants("subscribe", client.conn, channel, channel=channel)
        if client.closed:
            raise DisconnectError(codes.CONNECTION_CLOSED)
        if granted:
            chan_info, expires_at, sub_data = _granted(client, granted, chan_info, expires_at)
            opts = apply_override(opts, granted.get("override"))
    history_access = has_history_access(client, channel, opts) or client.options.insecure
    recoverable = opts.force_recovery or (
        bool(params.get("recoverable")) and (opts.allow_recovery or history_access)
    )
    positioned = (
        recoverable
        or opts.force_positioning
        or (bool(params.get("positioned")) and (opts.allow_positioning or history_access))
    )
    join_leave = opts.force_push_join_leave or (bool(params.get("join_leave")) and opts.join_leave)
    delta = params.get("delta") == "fossil" and "fossil" in opts.allowed_delta_types
    recovering = recoverable and bool(params.get("recover"))
    since = limit = None
    if recovering:
        since = _position(params)
    elif positioned:
        limit = 0
    handle = await node.subscribe(client, channel, since, limit)
    try:
        result: dict[str, Any] = {}
        if positioned:
            top = handle.position
            assert top is not None
            result.update(positioned=True, epoch=top.epoch, offset=top.offset)
        if recoverable:
            result["recoverable"] = True
        if recovering:
            result["was_recovering"] = True
            if handle.recovered:
                result["recovered"] = True
                codec = client.transport.codec
                pubs = handle.publications
                result["publications"] = [pub_dict(p, codec, delta_sub=delta) for p in pubs]
            elif int(params.get("flag", 0)) & FLAG_REJECT_UNRECOVERED:
                raise ReplyError(codes.UNRECOVERABLE_POSITION)
            else:
                handle.publications = []  # recovery is never partial
        if expires_at:
            result["expires"] = True
            result["ttl"] = max(0, int(expires_at - client.node.clock.time()))
        if delta:
            result["delta"] = True
        if sub_data is not None:
            result["data"] = sub_data
        if opts.presence:
            await node.add_presence(channel, client.client_info(channel, chan_info))
        if client.closed:
            raise DisconnectError(codes.CONNECTION_CLOSED)
    except BaseException:
        handle.abort()
        raise
    sub = Subscription(
        channel,
        join_leave,
        chan_info,
        expires_at,
        opts.presence,
        delta=delta,
        positioned=positioned,
        by_caps=by_caps,
    )
    client.subs[channel] = sub
    schedule_expiry(client, sub)
    return result, handle


def _granted(
    client: Client, granted: dict[str, Any], chan_info: bytes | None, expires_at: float
) -> tuple[bytes | None, float, bytes | None]:
    """What ``on_subscribe`` hooks returned: channel info, expiry, the reply's data."""
    try:
        expire_at = granted.get("expire_at", expires_at)
        if not isinstance(expire_at, int | float) or isinstance(expire_at, bool):
            raise TypeError("expire_at must be a number")
        info = encode_data(granted["info"])[0] if granted.get("info") is not None else chan_info
        data = encode_data(granted["data"]) if granted.get("data") is not None else None
    except TypeError as exc:
        log.error("client %s: on_subscribe hooks returned %s", client.id, exc)
        raise HookError("on_subscribe hooks returned bad values") from None
    if expire_at and expire_at <= client.node.clock.time():
        raise ReplyError(codes.TOKEN_EXPIRED)
    payload = None if data is None else client.transport.codec.payload(*data)
    return info, float(expire_at or 0), payload


def _position(params: dict[str, Any]) -> StreamPosition:
    offset, epoch = params.get("offset", 0), params.get("epoch", "")
    if not isinstance(offset, int) or offset < 0 or not isinstance(epoch, str):
        raise ReplyError(codes.BAD_REQUEST)
    return StreamPosition(offset, epoch)


def go_live(client: Client, channel: str, handle: SubscribeHandle) -> None:
    """After the subscribe reply (or push): deliver what arrived meanwhile, then go live."""
    handle.go_live()
    sub = client.subs.get(channel)
    node = client.node
    if sub is not None and sub.presence and node.namespaces.options(channel).join_leave:
        # After the reply and once live, so that the joining client gets its own join
        # too (as in Centrifugo); a leave is published after it, never before.
        node.spawn(node.broker.publish_join(channel, client.client_info(channel)))


async def server_side_subscribe(
    client: Client, channel: str, wanted: dict[str, Any], options: ServerSub | None = None
) -> tuple[dict[str, Any], SubscribeHandle] | None:
    """Subscribe to a channel the connect gives (the token's ``channels``/``subs``, the
    connect hooks' or proxy's, the personal channel), with its ``options``; the connect
    reply carries the result, then the caller makes the handle live."""
    try:
        opts = channel_options(client, channel)
    except (ReplyError, DisconnectError):
        log.info("client %s: connect channel %r skipped: unknown or invalid", client.id, channel)
        return None
    if channel in client.subs:
        return None
    params = {
        "recover": wanted.get("recover", False),
        "offset": wanted.get("offset", 0),
        "epoch": wanted.get("epoch", ""),
        "recoverable": True,
        "positioned": True,
    }
    if options is None:
        return await _subscribe(client, channel, opts, params, None, 0.0)
    opts = apply_override(opts, options.override)
    result, handle = await _subscribe(
        client, channel, opts, params, options.info, options.expire_at
    )
    if options.data is not None and "data" not in result:  # an on_subscribe hook's wins
        result["data"] = client.transport.codec.payload(*options.data)
    return result, handle


async def unsubscribe(client: Client, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
    channel = params.get("channel")
    if not isinstance(channel, str) or not channel:
        raise DisconnectError(codes.BAD_REQUEST_DISCONNECT)
    was = channel in client.subs
    leave(client, channel)
    conn = client.conn
    if was and conn is not None and client.node.hooks.has("unsubscribe"):
        await client.node.hooks.notify("unsubscribe", conn, channel, channel=channel)
    return {}


def unsubscribed(client: Client, channel: str) -> None:
    """The server took ``channel`` from a connected client: its ``on_unsubscribe`` hooks."""
    node, conn = client.node, client.conn
    if conn is not None and not client.closed and node.hooks.has("unsubscribe"):
        node.spawn(node.hooks.notify("unsubscribe", conn, channel, channel=channel))


def schedule_expiry(client: Client, sub: Subscription) -> None:
    """A subscription token's expiry: unless refreshed by then (plus the grace period),
    the client is unsubscribed with 2501 and resubscribes with a fresh token."""
    if sub.timer is not None:
        sub.timer.cancel()
        sub.timer = None
    if not sub.expires_at:
        return
    clock = client.node.clock
    # With sub_refresh hooks (a proxy) the server refreshes at the expiry itself.
    by_hooks = client.conn is not None and client.node.hooks.has("sub_refresh")
    grace = 0.0 if by_hooks else client.options.expired_grace
    delay = max(0.0, sub.expires_at - clock.time()) + grace
    sub.timer = clock.call_later(delay, _sub_expired, client, sub)


def _sub_expired(client: Client, sub: Subscription) -> None:
    if client.subs.get(sub.channel) is not sub or sub.expires_at > client.node.clock.time():
        return
    if client.conn is not None and client.node.hooks.has("sub_refresh"):
        client.node.spawn(_refresh_by_hooks(client, sub))
    else:
        server_unsubscribe(client, sub.channel, codes.UNSUBSCRIBE_EXPIRED)


async def _refresh_by_hooks(client: Client, sub: Subscription) -> None:
    """The ``on_sub_refresh`` hooks decide: a later ``expire_at`` extends the subscription;
    otherwise it ends (2501). When they fail they are asked again within the grace."""
    assert client.conn is not None
    node, channel = client.node, sub.channel
    try:
        granted = await node.hooks.grants("sub_refresh", client.conn, channel, channel=channel)
    except (HookError, Reject):
        if client.subs.get(channel) is not sub:
            return
        if node.clock.time() > sub.expires_at + client.options.expired_grace:
            server_unsubscribe(client, channel, codes.UNSUBSCRIBE_EXPIRED)
        else:
            retry = min(5.0, max(0.5, client.options.expired_grace / 4))
            sub.timer = node.clock.call_later(retry, _sub_expired, client, sub)
        return
    if client.subs.get(channel) is not sub:
        return
    expire_at = granted.get("expire_at")
    if (
        granted.get("expired")
        or not isinstance(expire_at, int | float)
        or (expire_at and expire_at <= node.clock.time())
    ):
        server_unsubscribe(client, channel, codes.UNSUBSCRIBE_EXPIRED)
        return
    sub.expires_at = float(expire_at)
    if granted.get("info") is not None:
        sub.chan_info = encode_data(granted["info"])[0]
    schedule_expiry(client, sub)


def leave(client: Client, channel: str) -> None:
    """Leave ``channel``: hub, presence, leave message."""
    sub = client.subs.pop(channel, None)
    client.node.unsubscribe(client, channel)
    if sub is None:
        return
    if sub.timer is not None:
        sub.timer.cancel()
    presence_leave(client, channel, sub)


def presence_leave(client: Client, channel: str, sub: Subscription) -> None:
    if not sub.presence:
        return
    node = client.node
    info = client.client_info(channel, sub.chan_info)
    node.remove_presence(channel, client.id)
    if node.namespaces.options(channel).join_leave:
        node.spawn(node.broker.publish_leave(channel, info))


def server_unsubscribe(client: Client, channel: str, unsub: codes.Unsubscribe) -> None:
    """Unsubscribe on the server's initiative and tell the client."""
    if channel not in client.subs:
        return
    leave(client, channel)
    client.send_push(
        {"channel": channel, "unsubscribe": {"code": unsub.code, "reason": unsub.reason}}
    )
    unsubscribed(client, channel)


async def sub_refresh(client: Client, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
    channel = params.get("channel")
    token = params.get("token", "")
    if not isinstance(channel, str) or not channel:
        raise DisconnectError(codes.BAD_REQUEST_DISCONNECT)
    sub = client.subs.get(channel)
    if sub is None:
        raise ReplyError(codes.PERMISSION_DENIED)
    if not token:
        raise ReplyError(codes.BAD_REQUEST)
    chan_info, expires_at, _ = _check_subscribe_token(client, channel, token, refreshing=True)
    now = client.node.clock.time()
    if expires_at and expires_at <= now:
        raise ReplyError(codes.TOKEN_EXPIRED)
    sub.expires_at = expires_at
    schedule_expiry(client, sub)
    if chan_info is not None:
        sub.chan_info = chan_info
    result: dict[str, Any] = {}
    if expires_at:
        result.update(expires=True, ttl=max(0, int(expires_at - now)))
    return result


async def server_subscribe(
    client: Client,
    channel: str,
    *,
    chan_info: bytes | None = None,
    data: bytes | None = None,
    since: StreamPosition | None = None,
    override: Any = None,
) -> bool:
    """Subscribe on the server's initiative (server API) and tell the client with a
    ``subscribe`` push; False when the channel is unknown or already subscribed."""
    opts = client.node.namespaces.find(channel)
    busy = channel in client.subs or channel in client.subscribing
    if opts is None or busy or client.closed or not client.connected:
        return False
    opts = apply_override(opts, override)
    params: dict[str, Any] = {"recoverable": True, "positioned": True}
    if since is not None:
        params.update(recover=True, offset=since.offset, epoch=since.epoch)
    client.subscribing.add(channel)
    try:
        result, handle = await _subscribe(client, channel, opts, params, chan_info, 0.0)
    finally:
        client.subscribing.discard(channel)
    push: dict[str, Any] = {
        key: result[key]
        for key in ("recoverable", "epoch", "offset", "positioned")
        if key in result
    }
    if data is not None:
        push["data"] = data
    client.send_push({"channel": channel, "subscribe": push})
    for pub in result.get("publications", []):
        client.send_push({"channel": channel, "pub": pub})
    go_live(client, channel, handle)
    return True


def caps_changed(client: Client) -> None:
    """The connection's capabilities changed (a refresh): subscriptions they admitted and
    no longer allow end (2000, as Centrifugo does; others are not looked at)."""
    for channel, sub in list(client.subs.items()):
        if sub.by_caps and not cap_allows(client, channel, "sub"):
            server_unsubscribe(client, channel, codes.UNSUBSCRIBE_SERVER)


def on_gap(client: Client, channel: str) -> None:
    """The channel lost publications history could not give back: a subscription that
    keeps a position resubscribes from it ("insufficient state", 2500); others, with
    at-most-once delivery, go on."""
    sub = client.subs.get(channel)
    if sub is not None and sub.positioned:
        server_unsubscribe(client, channel, codes.UNSUBSCRIBE_INSUFFICIENT)
