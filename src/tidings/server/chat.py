"""The chat demo (``--demo``): ``/demo/chat``, built on tidings.js and the hooks.

A room ``r`` is two channels: ``chat:r`` keeps the messages and the presence changes in
history (the back-chat a joining page reads), ``typing:r`` carries typing notices and keeps
nothing. Pages send what they have to say as JSON — over their ``/ws`` connection, where the
``on_message`` hook takes it, or with ``POST /demo/chat/send/<room>`` from any other
transport — and this module checks it and publishes it. Nothing a page sends is published
as it is: only the chat's own messages, built here, reach the two namespaces, which stay
closed to any other client publishing.

Presence is kept here, per room, by each page's random key: a page joins when its
connection opens, says it is there every few seconds, and leaves when its WebSocket closes,
when it sends ``leave`` (a beacon as the page goes), or when it has been silent for
``PRESENCE_TIMEOUT``. Every change is a ``presence`` message with the whole member list.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.clock import Clock, Timer
from tidings.core.conn import Conn
from tidings.core.hooks import Hooks
from tidings.core.publication import ClientInfo
from tidings.exceptions import BrokerError, HttpError, Reject
from tidings.protocol.http import Request

from .assets import asset
from .decisions import Response
from .request import check_origin

if TYPE_CHECKING:
    from tidings.app import App
    from tidings.core.node import Node

__all__ = [
    "HISTORY_SIZE",
    "HISTORY_TTL",
    "KEY",
    "MAX_MEMBERS",
    "MAX_NICK",
    "MAX_ROOMS",
    "MAX_TEXT",
    "PRESENCE_TIMEOUT",
    "ROOM",
    "ChatDemo",
    "Member",
    "Room",
    "chat_namespaces",
    "chat_page",
    "chat_send",
]

log = logging.getLogger("tidings.server")

ROOM = re.compile(r"[A-Za-z0-9_-]{1,40}")
KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")
MAX_NICK = 32
MAX_TEXT = 2000
PRESENCE_TIMEOUT = 30.0  # pages say they are there every 10 s
# What one process keeps for the demo is bounded, whatever pages make up.
MAX_ROOMS = 1000
MAX_MEMBERS = 1000
HISTORY_SIZE = 1000
HISTORY_TTL = 7 * 86400.0


def chat_namespaces(namespaces: Namespaces) -> Namespaces:
    """``namespaces`` with the chat's two, unless the configuration has its own."""
    named = dict(namespaces.named)
    named.setdefault(
        "chat",
        ChannelOptions(
            history_size=HISTORY_SIZE,
            history_ttl=HISTORY_TTL,
            history_meta_ttl=HISTORY_TTL,
            simple_subscribe=True,
        ),
    )
    named.setdefault("typing", ChannelOptions(history_size=0, simple_subscribe=True))
    return Namespaces(namespaces.default, named)


@dataclass
class Member:
    nick: str
    seen: float
    conn: str = ""  # the /ws connection it spoke through last, if any


@dataclass
class Room:
    members: dict[str, Member] = field(default_factory=dict)  # by page key

    def nicks(self) -> list[str]:
        return sorted({m.nick for m in self.members.values()}, key=str.casefold)


class ChatDemo:
    """The rooms and their presence; ``hooks`` for ``/ws`` pages, ``handle`` for all."""

    def __init__(self, node: Node, clock: Clock) -> None:
        self.node = node
        self.clock = clock
        self.rooms: dict[str, Room] = {}
        self._timer: Timer | None = None
        self.hooks = Hooks()
        self.hooks.on_message(self._on_message, channel=r"^chat:")
        self.hooks.on_disconnect(self._on_disconnect, channel=r"^chat:")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _on_message(
        self, conn: Conn, context: dict[str, Any], channel: str, message: Any
    ) -> None:
        room = channel.partition(":")[2]
        problem = await self.handle(room, message, conn.id)
        if problem:
            raise Reject(400, problem)

    async def _on_disconnect(self, conn: Conn, context: dict[str, Any]) -> None:
        for channel in conn.channels:
            name = channel.partition(":")[2]
            room = self.rooms.get(name)
            if channel.startswith("chat:") and room is not None:
                gone = [k for k, m in room.members.items() if m.conn == conn.id]
                for key in gone:
                    await self._leave(name, key)

    async def handle(self, room: str, message: Any, conn: str = "") -> str:
        """Act on one message of a page; the reason it is refused, or ``""``."""
        if not ROOM.fullmatch(room):
            return "bad room name"
        if not isinstance(message, dict):
            return "a chat message is a JSON object"
        kind, key = message.get("type"), message.get("key")
        if not isinstance(key, str) or not KEY.fullmatch(key):
            return "bad page key"
        if kind == "leave":
            await self._leave(room, key)
            return ""
        nick = message.get("nick")
        if not isinstance(nick, str) or not nick.strip() or len(nick) > MAX_NICK:
            return f"a nickname is 1 to {MAX_NICK} characters"
        nick = nick.strip()
        if kind not in ("join", "ping", "typing", "msg"):
            return "unknown message type"
        text, cid = message.get("text"), message.get("cid")
        if kind == "msg":
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
                return f"a message is 1 to {MAX_TEXT} characters"
            if not isinstance(cid, str) or not KEY.fullmatch(cid):
                return "bad message id"
        # Whatever a page says, it says it is there.
        if not await self._seen(room, key, nick, conn):
            return "the chat is full"
        if kind == "typing":
            await self._publish(f"typing:{room}", {"type": "typing", "nick": nick}, nick)
        elif kind == "msg":
            body = {"type": "msg", "nick": nick, "text": text, "cid": cid}
            # A page sends a message again when it can't tell whether it arrived (a
            # connection lost before the echo): the idempotency key publishes it once.
            await self._publish(f"chat:{room}", body, nick, idempotency_key=str(cid))
        return ""

    async def _seen(self, name: str, key: str, nick: str, conn: str) -> bool:
        """Note that the page ``key`` is in room ``name``; False when there is no room."""
        room = self.rooms.get(name)
        if room is None:
            if len(self.rooms) >= MAX_ROOMS:
                return False
            room = self.rooms[name] = Room()
        member = room.members.get(key)
        now = self.clock.monotonic()
        if member is not None and member.nick == nick:
            member.seen = now
            member.conn = conn or member.conn
            return True
        if member is None and len(room.members) >= MAX_MEMBERS:
            return False
        room.members[key] = Member(nick, now, conn)
        await self._presence(name, "join", nick)
        if self._timer is None:
            self._timer = self.clock.call_later(PRESENCE_TIMEOUT / 3, self._prune)
        return True

    async def _leave(self, name: str, key: str) -> None:
        room = self.rooms.get(name)
        member = room.members.pop(key, None) if room is not None else None
        if member is None:
            return
        await self._presence(name, "leave", member.nick)
        if room is not None and not room.members and self.rooms.get(name) is room:
            del self.rooms[name]

    def _prune(self) -> None:
        self._timer = None
        deadline = self.clock.monotonic() - PRESENCE_TIMEOUT
        for name, room in list(self.rooms.items()):
            for key, member in list(room.members.items()):
                if member.seen < deadline:
                    self.node.spawn(self._leave(name, key))
        if any(room.members for room in self.rooms.values()):
            self._timer = self.clock.call_later(PRESENCE_TIMEOUT / 3, self._prune)

    async def _presence(self, name: str, event: str, nick: str) -> None:
        room = self.rooms.get(name) or Room()
        body = {"type": "presence", "event": event, "nick": nick, "members": room.nicks()}
        await self._publish(f"chat:{name}", body, nick)

    async def _publish(
        self, channel: str, body: dict[str, Any], nick: str, idempotency_key: str = ""
    ) -> None:
        try:
            await self.node.publish(
                channel,
                orjson.dumps(body),
                info=ClientInfo(nick, ""),
                idempotency_key=idempotency_key,
            )
        except BrokerError as exc:
            log.warning("chat: publishing to %s failed: %s", channel, exc)


def chat_page(app: App, request: Request, rest: str = "") -> Response:
    """``GET /demo/chat``: the page (static: every user text is set with textContent)."""
    if app.demo_chat is None or request.method != "GET":
        raise HttpError(404, "not found")
    body, _ = asset("chat.html")
    return 200, body, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache")]


async def chat_send(app: App, request: Request, rest: str) -> Response:
    """``POST /demo/chat/send/<room>``: a page's message when it has no WebSocket."""
    chat = app.demo_chat
    room = rest.removeprefix("chat/send/")
    if chat is None or room == rest:
        raise HttpError(404, "not found")
    if request.method != "POST":
        raise HttpError(405, "method not allowed", [("Allow", "POST")])
    # A cross-site form can't post as a visitor (a beacon from the page itself is same-origin).
    check_origin(request, app.config.allowed_origins)
    try:
        message = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise HttpError(400, "body is not valid JSON") from None
    problem = await chat.handle(room, message)
    if problem:
        log.info("chat: refused a message for room %r: %s", room[:40], problem)
        raise HttpError(400, problem)
    return 200, b'{"ok":true}', [("Content-Type", "application/json")]
