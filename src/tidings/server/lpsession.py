"""Long-poll sessions: what lasts of a long-poll client between its polls.

A long-poll client has no connection that lasts: each poll is a request of its own. Its
first answer carries ``session``, a secret the client sends back as ``?session=`` with its
next polls. The session is the client's connection as the rest of the hub sees it: an id in
the node's registry (``conn.id``, which ``Publisher.send`` and the server API's
``send``/``send_all`` reach), the hooks' ``Conn`` and ``context`` across polls, and a buffer
for out-of-band messages that come while no poll waits. The secret is not the id: the id may
be seen by others (publication infos), and whoever holds the secret gets the messages.

Theory of operation
-------------------
- A poll without a session, or naming one this node doesn't hold (expired, ended, another
  node's) or one for other channels, runs the opening hooks and starts a new session; the
  old one, if any, is left to expire.
- A poll attaches to its session while it waits. A message for the session goes into that
  poll's answer as a ``message`` notice (answering it at once); without a poll it waits in
  the session, bounded by ``longpoll_session_messages`` and ``longpoll_session_bytes``: the
  message past either ends the session ("slow", as a stream that can't keep up is cut off).
  A poll that goes away unanswered gives its undelivered messages back to the session.
- A session whose client doesn't poll again within ``longpoll_session_ttl`` of its last poll
  expires: it leaves the registry (``send`` raises ``NoSuchConnection``) and its last hooks
  run (``on_disconnect``, ``on_finish``). One timer serves every session: idle sessions are
  kept in the order they became idle, which is the order they expire in. At most
  ``longpoll_max_sessions`` are kept; past it, the longest idle ends first.
- A hook's ``conn.disconnect`` ends the session: its messages are refused from then on,
  and the poll waiting (or else the next one, within the TTL) gets the ``disconnect``
  notice after the messages already held.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from tidings.protocol.envelope import payload_json

if TYPE_CHECKING:
    from tidings.config import Config
    from tidings.core.clock import Timer
    from tidings.core.conn import Conn
    from tidings.core.node import Node

    from .longpoll import LongPoll

__all__ = ["LongPollSession", "LongPollSessions"]

log = logging.getLogger("tidings.server")


class LongPollSession:
    """One long-poll client across its polls (a ``ConnEnd`` for hooks and ``send``)."""

    __slots__ = (
        "buffer",
        "buffered_bytes",
        "channels",
        "closed",
        "conn",
        "deadline",
        "final",
        "id",
        "poll",
        "registry",
        "secret",
        "user",
    )

    def __init__(self, registry: LongPollSessions, channels: list[str]) -> None:
        self.registry = registry
        self.id = str(uuid.uuid4())
        self.secret = secrets.token_urlsafe(18)
        self.user = ""
        self.channels = channels
        self.conn: Conn | None = None
        self.poll: LongPoll | None = None
        self.buffer: list[dict[str, Any]] = []  # notices for the next poll
        self.buffered_bytes = 0
        self.closed = False  # refuses messages: ended, or ending with ``final``
        self.final: dict[str, Any] | None = None  # a disconnect notice still to deliver
        self.deadline = 0.0

    def __repr__(self) -> str:
        return f"<LongPollSession {self.id} {','.join(self.channels)}>"

    # ConnEnd (tidings.core.conn)
    def send_message(self, data: bytes, is_json: bool) -> None:
        if self.closed:
            return
        body = orjson.Fragment(payload_json(data, is_json))
        notice = {"notice": "message", "channel": "", "data": body}
        poll = self.poll
        if poll is not None and not poll.closed:
            poll.add_notice(notice)
        else:
            self.hold([notice])

    def hold(self, notices: list[dict[str, Any]]) -> None:
        """Keep message notices for the next poll, within the bounds; past them the session
        ends ("slow")."""
        registry = self.registry
        for notice in notices:
            size = len(orjson.dumps(notice))
            if (
                len(self.buffer) >= registry.max_messages
                or self.buffered_bytes + size > registry.max_bytes
            ):
                log.info("long-poll session %s: %d messages held, ended", self.id, len(self.buffer))
                registry.end(self, "slow")
                return
            self.buffer.append(notice)
            self.buffered_bytes += size

    def close_with(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        node = self.registry.node
        if node.streams.get(self.id) is self:
            del node.streams[self.id]  # sends are refused from now on
        self.final = {"notice": "disconnect", "channel": "", "code": code, "reason": reason}
        poll = self.poll
        if poll is not None and not poll.closed:
            poll.add_notice(self.final, final=True)

    def hook_channels(self) -> list[str]:
        return list(self.channels)

    # polls
    def take(self) -> list[dict[str, Any]]:
        """The messages that waited for the next poll."""
        held = self.buffer
        self.buffer = []
        self.buffered_bytes = 0
        return held


class LongPollSessions:
    """The node's long-poll sessions by secret, and the timer that expires idle ones."""

    __slots__ = (
        "by_secret",
        "closed",
        "idle",
        "max_bytes",
        "max_messages",
        "max_sessions",
        "node",
        "timer",
        "ttl",
    )

    def __init__(self, node: Node, config: Config) -> None:
        self.node = node
        self.ttl = config.longpoll_session_ttl
        self.max_messages = config.longpoll_session_messages
        self.max_bytes = config.longpoll_session_bytes
        self.max_sessions = config.longpoll_max_sessions
        self.by_secret: dict[str, LongPollSession] = {}
        self.idle: OrderedDict[str, LongPollSession] = OrderedDict()  # oldest idle first
        self.timer: Timer | None = None
        self.closed = False  # shutdown: sessions made now end with the node

    def __len__(self) -> int:
        return len(self.by_secret)

    def find(self, secret: str, channels: list[str]) -> LongPollSession | None:
        """The session a poll names, if this node holds it and it is for ``channels``."""
        session = self.by_secret.get(secret) if secret else None
        if session is None or session.channels != channels:
            return None
        return session

    def create(self, channels: list[str], conn: Conn | None) -> LongPollSession:
        """A new session for a first poll; with ``conn``, it takes over the connection its
        opening hooks ran with (their id, user and what they sent)."""
        session = LongPollSession(self, channels)
        if conn is not None:
            from .hooked import Opening

            opening = conn.end
            assert isinstance(opening, Opening)
            opening.hand_over(conn, session)
        while len(self.by_secret) >= self.max_sessions and self.idle:
            _, oldest = self.idle.popitem(last=False)
            self.end(oldest, "limit")
        self.by_secret[session.secret] = session
        self.node.streams[session.id] = session
        self._idle(session)  # until its poll attaches
        return session

    def attach(self, session: LongPollSession, poll: LongPoll) -> None:
        """``poll`` waits for ``session`` now; an older poll still waiting is answered."""
        older = session.poll
        session.poll = poll
        self.idle.pop(session.secret, None)
        if older is not None and not older.closed:
            older.respond()
        for notice in session.take():
            poll.add_notice(notice)
        if session.final is not None:
            poll.add_notice(session.final, final=True)

    def detach(
        self, session: LongPollSession, poll: LongPoll, undelivered: list[dict[str, Any]]
    ) -> None:
        """``poll`` is over: answered (``undelivered`` empty) or gone (what it held goes
        back to the session). A session whose disconnect was delivered ends."""
        if session.poll is not poll:
            return
        session.poll = None
        if self.by_secret.get(session.secret) is not session:
            return  # ended meanwhile
        if poll.delivered_final:
            self.end(session, "server")
            return
        if undelivered:  # before what came since: the order they were sent in
            later = session.take()
            session.hold(undelivered + later)
        if self.by_secret.get(session.secret) is session:
            self._idle(session)

    def _idle(self, session: LongPollSession) -> None:
        session.deadline = self.node.clock.monotonic() + self.ttl
        self.idle[session.secret] = session
        self.idle.move_to_end(session.secret)
        if self.timer is None and not self.closed:
            self.timer = self.node.clock.call_later(self.ttl, self._expire)

    def _expire(self) -> None:
        self.timer = None
        now = self.node.clock.monotonic()
        while self.idle:
            session = next(iter(self.idle.values()))
            if session.deadline > now:
                self.timer = self.node.clock.call_later(session.deadline - now, self._expire)
                return
            self.idle.popitem(last=False)
            self.end(session, "expired")

    def end(self, session: LongPollSession, reason: str) -> None:
        """The session is over: out of the registries, its last hooks run."""
        if self.by_secret.get(session.secret) is not session:
            return
        del self.by_secret[session.secret]
        self.idle.pop(session.secret, None)
        session.closed = True
        session.buffer = []
        node = self.node
        if node.streams.get(session.id) is session:
            del node.streams[session.id]
        log.debug("long-poll session %s ended: %s", session.id, reason)
        conn = session.conn
        if conn is not None:
            conn.ended(list(session.channels))
            if node.hooks:
                node.spawn(_last_hooks(node, conn))

    def close(self) -> None:
        """Shutdown: every session ends."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for session in list(self.by_secret.values()):
            self.end(session, "shutdown")


async def _last_hooks(node: Node, conn: Conn) -> None:
    await node.hooks.notify("disconnect", conn)
    await node.hooks.notify("finish", conn)
