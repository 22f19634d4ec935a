"""``/lp/<channels>``: long-polling.

Answers at once with everything after the client's position; otherwise holds the request
until a publication (publications arriving in the same loop iteration share one response),
a message for its session, or the timeout. Every response carries the position to come back
with, as ``ETag`` and as ``id`` in the body, so nothing published between two polls is
lost, and the ``session`` to come back with (``lpsession.py``), so that what is sent to the
client between two polls is not either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from tidings.core.hub import Formatter
from tidings.core.node import Node
from tidings.core.publication import ClientInfo, Publication, StreamPosition
from tidings.protocol.envelope import payload_json
from tidings.protocol.positions import format_positions

from .formats import ENVELOPE

if TYPE_CHECKING:
    from .context import Context
    from .lpsession import LongPollSession

__all__ = ["LongPoll", "LongPollHost"]

log = logging.getLogger("tidings.server")


class LongPollHost(Protocol):
    """What answers a long-poll: the native ``HttpConnection``, or an ASGI request."""

    @property
    def ctx(self) -> Context: ...

    def send_error(self, status: int, reason: str) -> None: ...

    def finish_longpoll(self, body: bytes, headers: list[tuple[str, str]]) -> None: ...


class LongPoll:
    """One waiting long-poll request, subscribed to its channels until it is answered."""

    __slots__ = (
        "answered",
        "carries_final",
        "channels",
        "closed",
        "conn",
        "delivered_final",
        "formatter",
        "headers",
        "messages",
        "notices",
        "positions",
        "raw",
        "ready",
        "scheduled",
        "session",
        "timer",
    )

    def __init__(
        self,
        conn: LongPollHost,
        channels: list[str],
        raw: bool,
        headers: list[tuple[str, str]],
        session: LongPollSession,
    ) -> None:
        self.conn = conn
        self.session = session
        self.channels = channels
        self.raw = raw
        self.headers = headers
        self.formatter: Formatter = ENVELOPE
        self.closed = False
        self.ready = False
        self.scheduled = False
        self.messages: list[Publication] = []
        self.notices: list[dict[str, Any]] = []
        self.positions: dict[str, tuple[int, str]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False
        self.carries_final = False  # the session's disconnect notice is among the notices
        self.delivered_final = False
        session.registry.attach(session, self)  # what waited for this poll is in it now

    async def start(self, resume: dict[str, StreamPosition], last: int | None, wait: float) -> None:
        node = self.conn.ctx.node
        try:
            for channel in self.channels:
                # Without a position, "last 0" still reports where the stream stands, so
                # the response's id lets the next poll resume exactly.
                since = resume.get(channel)
                limit = None if since else (last or 0)
                handle = await node.subscribe(self, channel, since, limit)
                if self.closed:
                    handle.abort()
                    return
                handle.replay()
                position = handle.go_live()
                if position is not None:
                    self.positions.setdefault(channel, (position.offset, position.epoch))
        except Exception:
            log.exception("long-poll subscribe failed")
            self.close()
            self.conn.send_error(500, "internal error")
            return
        self.ready = True
        if self.messages or self.notices:
            self.respond()
        else:
            self.timer = self.conn.ctx.loop.call_later(wait, self.respond)

    def deliver(self, pub: Publication, data: bytes) -> None:
        self.messages.append(pub)
        self.positions[pub.channel] = (pub.offset, pub.epoch)
        self._schedule()

    def notice(self, kind: str, channel: str, fields: dict[str, Any]) -> None:
        self.add_notice({"notice": kind, "channel": channel, **fields})

    def add_notice(self, notice: dict[str, Any], *, final: bool = False) -> None:
        """A notice for this answer (a message for its session: answered at once)."""
        self.notices.append(notice)
        self.carries_final = self.carries_final or final
        self._schedule()

    def presence_event(self, kind: str, channel: str, info: ClientInfo) -> None:
        """Simple endpoints don't carry join/leave."""

    def channel_deleted(self, channel: str) -> None:
        self.channels = [c for c in self.channels if c != channel]
        self.notice("deleted", channel, {})

    def _schedule(self) -> None:
        if self.ready and not self.scheduled and not self.closed:
            self.scheduled = True
            self.conn.ctx.loop.call_soon(self.respond)

    def respond(self) -> None:
        if self.closed:
            return
        self.answered = True
        self.delivered_final = self.carries_final
        self.close()
        ident = format_positions(self.positions)
        if self.raw:
            items = [orjson.Fragment(payload_json(p.data, p.is_json)) for p in self.messages]
        else:
            items = [orjson.Fragment(ENVELOPE.encode(p)) for p in self.messages]
        body: dict[str, Any] = {"id": ident, "messages": items, "session": self.session.secret}
        headers = [("ETag", f'"{ident}"'), ("Cache-Control", "no-store"), *self.headers]
        if self.notices:
            body["notices"] = self.notices
            if any(n["notice"] == "gap" for n in self.notices):
                headers.append(("X-Tidings-Gap", "1"))
        self.conn.finish_longpoll(orjson.dumps(body), headers)

    def _leave(self, node: Node, channel: str) -> None:
        node.unsubscribe(self, channel)

    def close(self) -> None:
        """Stop waiting and leave the channels (the connection went away or was answered)."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        node = self.conn.ctx.node
        loop = self.conn.ctx.loop
        for channel in self.channels:
            # Deferred: this may run inside the hub's fan-out over this channel.
            loop.call_soon(self._leave, node, channel)
        # The session outlives its polls; messages an unanswered poll held go back to it.
        undelivered = [] if self.answered else [n for n in self.notices if n["notice"] == "message"]
        session = self.session
        session.registry.detach(session, self, undelivered)
