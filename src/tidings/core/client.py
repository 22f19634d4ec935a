"""One connection of the client protocol (Centrifugo-compatible): its state machine.

A ``Client`` takes decoded commands (dicts, the same for JSON and Protobuf), checks them
against the connection's state, the namespace options and the tokens, and answers with
reply dicts through its ``ClientTransport``. It is also the hub subscriber for every channel
it is subscribed to. Commands of one connection run one after another, in arrival order;
no task exists while the connection is idle.

State: CONNECTING (only ``connect`` allowed) → CONNECTED → CLOSED.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from tidings.exceptions import (
    BrokerError,
    DisconnectError,
    HookError,
    InvalidToken,
    Reject,
    ReplyError,
    TokenExpired,
)
from tidings.protocol.centrifuge import codes

from . import client_commands as commands
from . import client_subscribe as subscribing
from . import permissions
from .client_types import (
    ClientOptions,
    ClientTransport,
    ServerSub,
    Subscription,
    info_dict,
    refusal,
)
from .clock import Timer
from .conn import Conn, decode_data, encode_data
from .publication import ClientInfo, Publication

if TYPE_CHECKING:
    import asyncio

    from tidings.protocol.http import Request

    from .node import Node

__all__ = [
    "MAX_QUEUED_COMMANDS",
    "METHODS",
    "UNI_ERRORS",
    "Client",
    "Handler",
]

log = logging.getLogger("tidings.client")

METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)


MAX_QUEUED_COMMANDS = 1024

# How a command error reaches a unidirectional client, which has no replies.
UNI_ERRORS = {
    codes.TOKEN_EXPIRED.code: codes.CONNECTION_EXPIRED,
    codes.EXPIRED.code: codes.CONNECTION_EXPIRED,
    codes.TOO_MANY_REQUESTS.code: codes.TOO_MANY_REQUESTS_DISCONNECT,
    codes.PERMISSION_DENIED.code: codes.PERMISSION_DENIED_DISCONNECT,
}


class Client:
    """The protocol state of one connection."""

    commands: ClassVar[dict[str, Handler]]

    __slots__ = (
        "_busy",
        "_drain_task",
        "_expire_timer",
        "_inbox",
        "_refused",
        "_stale_timer",
        "_stamp",
        "_tokens",
        "awaiting_pong",
        "caps",
        "closed",
        "conn",
        "connect_failed",
        "connected",
        "connected_at",
        "exp",
        "formatter",
        "id",
        "info",
        "node",
        "options",
        "request",
        "session",
        "subs",
        "subscribing",
        "transport",
        "user",
    )

    def __init__(
        self,
        node: Node,
        transport: ClientTransport,
        options: ClientOptions,
        request: Request | None = None,
    ) -> None:
        self.node = node
        self.request = request  # kept until connect where hooks or the message log read it
        self.conn: Conn | None = None
        self.transport = transport
        self.options = options
        self.formatter = transport.formatter
        self.id = str(uuid.uuid4())
        # The session addresses /emulation requests. It is not the client id, which other
        # clients may learn (presence, publication info): only this connection knows it.
        self.session = secrets.token_urlsafe(18)
        self.user = ""
        self.info: bytes | None = None
        # Connection capabilities (``permissions.Caps``): from the token or the connect hooks.
        self.caps: permissions.Caps | None = None
        self.exp = 0.0
        self.connected = False
        self.connected_at = 0.0  # wall clock, for "the user's older connections"
        self.connect_failed = False
        self.closed = False
        self.awaiting_pong = False
        self.subs: dict[str, Subscription] = {}
        self.subscribing: set[str] = set()  # channels whose subscribe is in progress
        self._inbox: deque[dict[str, Any]] = deque()
        self._tokens = float(options.command_burst)
        self._stamp = node.clock.monotonic()
        self._refused = 0
        self._busy = False
        self._drain_task: asyncio.Task[None] | None = None
        self._expire_timer: Timer | None = None
        # Centrifugo closes connections that don't connect in time (3502 stale): they
        # would otherwise hold a connection slot forever without any credentials.
        self._stale_timer: Timer | None = node.clock.call_later(
            options.connect_timeout, self._stale
        )

    def _stale(self) -> None:
        self._stale_timer = None
        if not self.connected and not self.closed:
            log.info("client %s: no connect within %ss", self.id, self.options.connect_timeout)
            self.disconnect(codes.STALE)

    # input
    def feed(self, commands: list[dict[str, Any]]) -> None:
        """Queue decoded commands; they run in order. Past the command rate a command is
        answered 111 (too many requests); a client that goes on regardless, or queues more
        than ``MAX_QUEUED_COMMANDS`` unanswered commands, is cut off (3013)."""
        if self.closed:
            return
        if self.options.command_rate:
            commands = self._admit(commands)
            if self.closed:
                return
        if len(self._inbox) + len(commands) > MAX_QUEUED_COMMANDS:
            log.info("client %s: too many queued commands", self.id)
            self.disconnect(codes.TOO_MANY_REQUESTS_DISCONNECT)
            return
        self._inbox.extend(commands)
        if not self._busy:
            self._busy = True
            self._drain_task = self.node.spawn(self._drain())

    def _admit(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A token bucket per connection: ``command_rate`` a second, ``command_burst`` at
        once. Refused commands are answered at once with 111, so the client backs off."""
        options = self.options
        now = self.node.clock.monotonic()
        tokens = min(
            float(options.command_burst), self._tokens + (now - self._stamp) * options.command_rate
        )
        self._stamp = now
        admitted = []
        for cmd in commands:
            if tokens >= 1:
                tokens -= 1
                self._refused = 0
                admitted.append(cmd)
                continue
            self._refused += 1
            if self._refused > options.command_burst:
                log.info("client %s: went on past the command rate", self.id)
                self.disconnect(codes.TOO_MANY_REQUESTS_DISCONNECT)
                return []
            if cmd.get("id"):
                self.reply({"id": cmd["id"], "error": codes.TOO_MANY_REQUESTS.reply()})
        self._tokens = tokens
        return admitted

    async def _drain(self) -> None:
        try:
            while self._inbox and not self.closed:
                await self.handle(self._inbox.popleft())
        finally:
            self._busy = False

    def bad_frame(self) -> None:
        """The transport could not decode a frame."""
        log.info("client %s sent an undecodable frame", self.id)
        self.disconnect(codes.BAD_REQUEST_DISCONNECT)

    async def handle(self, cmd: dict[str, Any]) -> None:
        """Run one command and answer it."""
        method = next((m for m in METHODS if m in cmd), None)
        cmd_id = cmd.get("id", 0)
        if (method == "connect") == self.connected or self.connect_failed:
            # connect must come first, only once, and a failed one ends the conversation.
            log.info("client %s: %s in the wrong state", self.id, method or "command")
            self.disconnect(codes.BAD_REQUEST_DISCONNECT)
            return
        if not cmd_id and method != "send":
            # A command without id (other than send) is the pong to our ping; one that
            # answers no ping is a protocol violation (as in Centrifugo).
            if not self.awaiting_pong:
                log.info("client %s: pong without a ping", self.id)
                self.disconnect(codes.BAD_REQUEST_DISCONNECT)
                return
            self.awaiting_pong = False
            return
        if method is None:
            log.info("client %s: command without a known method", self.id)
            self.disconnect(codes.BAD_REQUEST_DISCONNECT)
            return
        params = cmd[method]
        started = time.perf_counter()
        try:
            result = await self.commands[method](self, cmd_id, params)
        except ReplyError as exc:
            if method == "connect":
                self.connect_failed = True
            self.reply({"id": cmd_id, "error": exc.error.reply()})
        except DisconnectError as exc:
            self.disconnect(exc.disconnect)
        except Reject as exc:
            self._refused_by_hook(cmd_id, method, refusal(exc))
        except HookError:
            # Logged (with the hook's exception) where it failed; the client learns no more.
            if method == "connect":
                self.connect_failed = True
            self.reply({"id": cmd_id, "error": codes.INTERNAL.reply()})
        except BrokerError as exc:
            # Normal under failure (a timeout, a restart): the client may retry.
            log.warning("client %s: %s failed: %s", self.id, method, exc)
            self.reply({"id": cmd_id, "error": codes.INTERNAL.reply()})
        except Exception:
            log.exception("client %s: %s failed", self.id, method)
            self.reply({"id": cmd_id, "error": codes.INTERNAL.reply()})
        else:
            if result is not None and cmd_id:
                self.reply({"id": cmd_id, method: result})
        finally:
            self.node.command_latency.observe(method, time.perf_counter() - started)

    def _refused_by_hook(
        self, cmd_id: int, method: str, error: ReplyError | DisconnectError
    ) -> None:
        if isinstance(error, DisconnectError):
            self.disconnect(error.disconnect)
            return
        if method == "connect":
            self.connect_failed = True
        if cmd_id:
            self.reply({"id": cmd_id, "error": error.error.reply()})

    def reply(self, reply: dict[str, Any]) -> None:
        if self.closed:
            return
        codec = self.transport.codec
        if self.transport.unidirectional:
            self._uni_reply(reply)
            return
        self.transport.send(codec.join([codec.encode_reply(reply)]))

    def _uni_reply(self, reply: dict[str, Any]) -> None:
        """Unidirectional transports carry bare pushes: the connect result becomes a
        ``connect`` push, pings an empty push, and a connect error a disconnect."""
        codec = self.transport.codec
        if "push" in reply:
            push = reply["push"]
        elif "connect" in reply:
            push = {"connect": reply["connect"]}
        elif "error" in reply:
            self.disconnect(UNI_ERRORS.get(reply["error"]["code"], codes.SERVER_ERROR))
            return
        elif not reply:
            push = {}
        else:
            return
        self.transport.send(codec.encode_push(push))

    def send_push(self, push: dict[str, Any]) -> None:
        self.reply({"push": push})

    def send_message(self, data: bytes, is_json: bool = True) -> None:
        """An asynchronous message to this client (``message`` push)."""
        self.send_push({"message": {"data": self.transport.codec.payload(data, is_json)}})

    # ConnEnd (conn.py)
    def close_with(self, code: int, reason: str) -> None:
        self.disconnect(codes.Disconnect(code, reason))

    def hook_channels(self) -> list[str]:
        return list(self.subs)

    # connection
    async def cmd_connect(self, cmd_id: int, params: dict[str, Any]) -> None:
        node, options = self.node, self.options
        token = params.get("token", "")
        channels: list[str] = []
        server_subs: dict[str, ServerSub] = {}  # options of the connect's own subscriptions
        if token:
            verifier = node.token_verifier
            if verifier is None or not verifier.enabled:
                raise DisconnectError(codes.INVALID_TOKEN)
            try:
                claims = verifier.connect_token(token)
            except TokenExpired:
                raise ReplyError(codes.TOKEN_EXPIRED) from None
            except InvalidToken as exc:
                log.info("client %s: %s", self.id, exc)
                raise DisconnectError(codes.INVALID_TOKEN) from None
            self.user = claims.user
            self.info = claims.info
            expire_at = claims.expire_at if claims.expire_at is not None else claims.exp
            self.exp = float(expire_at or 0)
            self.caps = claims.caps
            # The token's ``subs`` (with per-channel options) win over its ``channels``.
            channels = list(claims.subs) if claims.subs else list(claims.channels)
            try:
                server_subs = {ch: ServerSub.of(o) for ch, o in claims.subs.items()}
            except TypeError as exc:
                log.info("client %s: token subs: %s", self.id, exc)
                raise DisconnectError(codes.INVALID_TOKEN) from None
            if any(node.namespaces.find(ch) is None for ch in channels):
                # Centrifugo refuses a token naming a channel of an unknown namespace.
                raise ReplyError(codes.UNKNOWN_CHANNEL)
        elif not (
            options.insecure
            or options.allow_anonymous_connect_without_token
            or node.hooks.has("connect")  # they decide, as Centrifugo's connect proxy does
        ):
            # No credentials at all (Centrifugo: "client credentials not found").
            log.info("client %s: connect without token refused", self.id)
            raise DisconnectError(codes.BAD_REQUEST_DISCONNECT)
        if self.exp and self.exp <= node.clock.time():
            raise ReplyError(codes.TOKEN_EXPIRED)
        connect_data: bytes | None = None
        if node.wants_conns:
            conn = self.conn = Conn(
                node,
                self,
                kind="client",
                transport=self.transport.name,
                request=self.request,
                protocol=self.transport.codec.name,
            )
            self.request = None
            raw = params.get("data")
            if isinstance(raw, bytes) and raw:
                conn.data = decode_data(raw, self.transport.codec.name == "json" or _json(raw))
            conn.client_name = str(params.get("name", ""))
            conn.client_version = str(params.get("version", ""))
            if node.hooks.has("connect"):
                granted = await node.hooks.grants("connect", conn)
                if self.closed:
                    return
                connect_data = self._granted(granted, channels, server_subs)
        personal = options.personal_channel(self.user)
        if personal is not None and personal not in channels:
            channels.append(personal)
        requested = params.get("subs", {})
        if not isinstance(requested, dict):
            raise DisconnectError(codes.BAD_REQUEST_DISCONNECT)
        # Channels the client asks back (server-side subscriptions it had) count when it
        # could subscribe to them by itself anyway.
        channels += [
            ch
            for ch in requested
            if ch not in channels and permissions.may_subscribe_without_token(self, ch)
        ]
        if len(channels) > options.max_channels:
            # The connect's subscriptions count against the limit like any other.
            log.info("client %s: connect with %d channels", self.id, len(channels))
            raise DisconnectError(codes.CHANNEL_LIMIT)
        self.connected = True
        self.connected_at = node.clock.time()
        if self._stale_timer is not None:
            self._stale_timer.cancel()
            self._stale_timer = None
        node.register_client(self)
        result: dict[str, Any] = {
            "client": self.id,
            "version": node.version,
            "ping": options.ping_interval,
            "pong": not self.transport.unidirectional,
        }
        if self.transport.emulated or self.transport.unidirectional:
            result["session"] = self.session
            result["node"] = node.id
        if connect_data is not None:
            result["data"] = connect_data
        self.set_expiry(result)
        handles = []
        subs_result: dict[str, Any] = {}
        try:
            for channel in channels:
                wanted = requested.get(channel, {})
                made = await subscribing.server_side_subscribe(
                    self, channel, wanted, server_subs.get(channel)
                )
                if made is not None:
                    subs_result[channel], handle = made
                    handles.append(handle)
        except BaseException:
            for handle in handles:
                handle.abort()
                subscribing.leave(self, handle.channel)
            self.connected = False
            node.unregister_client(self)
            raise
        if subs_result:
            result["subs"] = subs_result
        self.reply({"id": cmd_id, "connect": result})
        for handle in handles:
            subscribing.go_live(self, handle.channel, handle)
        if personal is not None and options.personal_single_connection:
            # One connection per user (Centrifugo's single_connection): the older ones go,
            # on every node, and don't reconnect; a newer one that raced this is spared.
            limit = codes.CONNECTION_LIMIT
            command = {
                "method": "disconnect",
                "user": self.user,
                "code": limit.code,
                "reason": limit.reason,
                "whitelist": [self.id],
                "before": self.connected_at,
            }
            node.spawn(node.controller.broadcast(command))

    def _granted(
        self, granted: dict[str, Any], channels: list[str], server_subs: dict[str, ServerSub]
    ) -> bytes | None:
        """Apply what ``on_connect`` hooks returned (the user, connection info, expiry,
        server-side channels and their options, capabilities); the connect result's
        ``data``, encoded for this client."""
        try:
            user = granted.get("user", self.user)
            expire_at = granted.get("expire_at", self.exp)
            more = granted.get("channels", [])
            subs = granted.get("subs") or {}
            if not isinstance(user, str) or not isinstance(expire_at, int | float):
                raise TypeError("user must be a string, expire_at a number")
            if not isinstance(more, list) or not all(isinstance(c, str) for c in more):
                raise TypeError("channels must be a list of strings")
            if not isinstance(subs, dict) or not all(isinstance(c, str) for c in subs):
                raise TypeError("subs must be a dict by channel name")
            sub_options = {ch: ServerSub.of(options) for ch, options in subs.items()}
            caps = self.caps
            if granted.get("caps") is not None:
                caps = permissions.Caps.parse(granted["caps"])
            info = encode_data(granted["info"])[0] if granted.get("info") is not None else None
            data = encode_data(granted["data"]) if granted.get("data") is not None else None
        except (TypeError, ValueError) as exc:
            log.error("client %s: on_connect hooks returned %s", self.id, exc)
            raise HookError("on_connect hooks returned bad values") from None
        self.user, self.exp, self.caps = user, float(expire_at or 0), caps
        if info is not None:
            self.info = info
        if granted.get("meta") is not None and self.conn is not None:
            self.conn.meta = granted["meta"]
        channels += [c for c in more if c not in channels]
        channels += [c for c in sub_options if c not in channels]
        server_subs.update(sub_options)
        if self.exp and self.exp <= self.node.clock.time():
            raise ReplyError(codes.TOKEN_EXPIRED)
        return None if data is None else self.transport.codec.payload(*data)

    def set_expiry(self, result: dict[str, Any]) -> None:
        if self._expire_timer is not None:
            self._expire_timer.cancel()
            self._expire_timer = None
        if not self.exp:
            return
        remaining = self.exp - self.node.clock.time()
        result["expires"] = True
        result["ttl"] = max(0, int(remaining))
        self._arm_expiry(remaining)

    def _arm_expiry(self, remaining: float) -> None:
        # From the exact expiry, not the whole seconds told to the client: a timer that
        # fired before ``exp`` would find the connection valid and never fire again.
        # With refresh hooks (a refresh proxy) the server refreshes at the expiry itself.
        grace = 0.0 if self._refreshed_by_hooks() else self.options.expired_grace
        delay = max(0.0, remaining) + grace
        self._expire_timer = self.node.clock.call_later(delay, self._expired)

    def _refreshed_by_hooks(self) -> bool:
        return self.conn is not None and self.node.hooks.has("refresh")

    def _expired(self) -> None:
        self._expire_timer = None
        if not self.exp or self.closed:
            return
        remaining = self.exp - self.node.clock.time()
        if remaining > 0:  # the wall clock lagged the loop's clock: check again at the expiry
            self._arm_expiry(remaining)
        elif self._refreshed_by_hooks():
            self.node.spawn(self._refresh_by_hooks())
        else:
            self.disconnect(codes.CONNECTION_EXPIRED)

    async def _refresh_by_hooks(self) -> None:
        """The ``on_refresh`` hooks decide: a later ``expire_at`` extends the connection
        (unidirectional clients get a ``refresh`` push); otherwise it expires (3005). When
        they fail, they are asked again until ``expired_grace`` has passed."""
        assert self.conn is not None
        node = self.node
        try:
            granted = await node.hooks.grants("refresh", self.conn)
        except (HookError, Reject):
            if self.closed:
                return
            if node.clock.time() > self.exp + self.options.expired_grace:
                self.disconnect(codes.CONNECTION_EXPIRED)
            else:
                retry = min(5.0, max(0.5, self.options.expired_grace / 4))
                self._expire_timer = node.clock.call_later(retry, self._expired)
            return
        if self.closed:
            return
        expire_at = granted.get("expire_at")
        if (
            granted.get("expired")
            or not isinstance(expire_at, int | float)
            or (expire_at and expire_at <= node.clock.time())
        ):
            self.disconnect(codes.CONNECTION_EXPIRED)
            return
        self.exp = float(expire_at)
        if granted.get("info") is not None:
            self.info = encode_data(granted["info"])[0]
        if granted.get("caps") is not None:
            try:
                self.caps = permissions.Caps.parse(granted["caps"])
            except (TypeError, ValueError) as exc:
                log.error("client %s: on_refresh hooks returned caps %s", self.id, exc)
            else:
                subscribing.caps_changed(self)
        push: dict[str, Any] = {}
        self.set_expiry(push)
        if self.transport.unidirectional:
            self.send_push({"refresh": push})

    async def cmd_refresh(self, cmd_id: int, params: dict[str, Any]) -> dict[str, Any]:
        verifier = self.node.token_verifier
        token = params.get("token", "")
        if not token or verifier is None or not verifier.enabled:
            raise DisconnectError(codes.BAD_REQUEST_DISCONNECT)
        try:
            claims = verifier.connect_token(token)
        except TokenExpired:
            raise DisconnectError(codes.CONNECTION_EXPIRED) from None
        except InvalidToken:
            raise DisconnectError(codes.INVALID_TOKEN) from None
        if claims.user != self.user:
            raise DisconnectError(codes.INVALID_TOKEN)
        expire_at = claims.expire_at if claims.expire_at is not None else claims.exp
        self.exp = float(expire_at or 0)
        if claims.info is not None:
            self.info = claims.info
        if claims.caps is not None:
            self.caps = claims.caps
            subscribing.caps_changed(self)
        result: dict[str, Any] = {"client": self.id, "version": self.node.version}
        self.set_expiry(result)
        return result

    def ping(self) -> None:
        """Called by the server's heartbeat: a client that didn't answer the last ping
        is gone; otherwise send a new one (an empty reply)."""
        if not self.connected or self.closed:
            return
        if self.awaiting_pong:
            self.disconnect(codes.NO_PONG)
            return
        self.awaiting_pong = not self.transport.unidirectional
        self.reply({})

    def disconnect(self, disconnect: codes.Disconnect) -> None:
        """Leave every channel, unregister and close the transport with ``disconnect``."""
        if self._end() and not self.transport.closed:
            self.transport.close(disconnect)

    def transport_closed(self) -> None:
        """The connection went away under us."""
        self._end()

    def _end(self) -> bool:
        """Leave every channel and unregister, once; False when already done."""
        if self.closed:
            return False
        self.closed = True
        for timer in (self._expire_timer, self._stale_timer):
            if timer is not None:
                timer.cancel()
        conn = self.conn
        if conn is not None:
            conn.ended(list(self.subs))
        self._leave_all()
        if self.connected:
            self.node.unregister_client(self)
        if conn is not None and self.node.hooks:
            self.node.spawn(self._last_hooks(conn, self.connected))
        return True

    async def _last_hooks(self, conn: Conn, connected: bool) -> None:
        """``on_disconnect`` (when it had connected), then ``on_finish``, after the
        connection's running command and its hooks."""
        task = self._drain_task
        if task is not None and not task.done():
            await task
        hooks = self.node.hooks
        if connected:
            await hooks.notify("disconnect", conn)
        await hooks.notify("finish", conn)

    def _leave_all(self) -> None:
        for channel in list(self.subs):
            subscribing.leave(self, channel)

    # hub subscriber
    def excluded(self, pub: Publication) -> None:
        """A publication skipped this connection: a delta subscription's next one is full."""
        sub = self.subs.get(pub.channel)
        if sub is not None:
            sub.delta_ready = False

    def deliver(self, pub: Publication, data: bytes) -> None:
        sub = self.subs.get(pub.channel)
        if sub is None:
            return
        if sub.delta:
            # The first publication after subscribing is full; later ones may be deltas
            # against the previous one, which this client then holds.
            full, patch = self.transport.delta_formats
            data = (patch if sub.delta_ready and pub.delta else full).encode(pub)
            sub.delta_ready = True
        self.transport.push(data)

    def notice(self, kind: str, channel: str, fields: dict[str, Any]) -> None:
        """Gaps at subscribe are told in the reply (``recovered``); a gap later on makes a
        positioned subscription resubscribe (``client_subscribe.on_gap``)."""
        if kind == "gap":
            subscribing.on_gap(self, channel)

    def channel_deleted(self, channel: str) -> None:
        sub = self.subs.pop(channel, None)
        if sub is not None:
            if sub.timer is not None:
                sub.timer.cancel()
            subscribing.presence_leave(self, channel, sub)
            unsub = codes.UNSUBSCRIBE_SERVER
            self.send_push(
                {"channel": channel, "unsubscribe": {"code": unsub.code, "reason": unsub.reason}}
            )
            subscribing.unsubscribed(self, channel)

    def presence_event(self, kind: str, channel: str, info: ClientInfo) -> None:
        sub = self.subs.get(channel)
        if sub is not None and sub.join_leave:
            self.send_push({"channel": channel, kind: {"info": info_dict(info)}})

    def client_info(self, channel: str | None = None, chan_info: bytes | None = None) -> ClientInfo:
        """Who this connection is, with its channel info in ``channel`` (or ``chan_info``)."""
        if channel is not None and chan_info is None:
            sub = self.subs.get(channel)
            chan_info = sub.chan_info if sub is not None else None
        return ClientInfo(self.user, self.id, self.info, chan_info)


def _json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


# A command's handler gets the command id and parameters; it returns the reply's result
# (or None when it answered itself, or there is nothing to answer).
Handler = Callable[[Client, int, dict[str, Any]], Awaitable[dict[str, Any] | None]]

Client.commands = {
    "connect": Client.cmd_connect,
    "refresh": Client.cmd_refresh,
    "subscribe": subscribing.subscribe,
    "unsubscribe": subscribing.unsubscribe,
    "sub_refresh": subscribing.sub_refresh,
    "publish": commands.publish,
    "presence": commands.presence,
    "presence_stats": commands.presence_stats,
    "history": commands.history,
    "rpc": commands.rpc,
    "send": commands.send,
}
