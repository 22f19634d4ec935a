"""Recording ends for tests: a hub subscriber and a client-protocol transport.

Both keep what they received and let a test wait for it (``wait_for``) instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from tidings.core.hub import Formatter
from tidings.core.publication import ClientInfo, Publication
from tidings.protocol.centrifuge import codes
from tidings.protocol.centrifuge.codec import JSON, Codec

from . import TIMEOUT

__all__ = ["PAYLOAD", "PayloadFormat", "RecordingSubscriber", "RecordingTransport", "Waiting"]


class Waiting:
    """What a recorder calls ``changed()`` on; ``wait_for`` waits on it."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; ``TimeoutError`` after ``TIMEOUT``."""
        async with asyncio.timeout(TIMEOUT):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


class PayloadFormat(Formatter):
    """Encodes a publication as its payload alone."""

    __slots__ = ()

    def build(self, pub: Publication) -> bytes:
        return pub.data


PAYLOAD = PayloadFormat()


class RecordingSubscriber(Waiting):
    """A hub subscriber (``tidings.core.hub.Subscriber``) that records what reaches it."""

    def __init__(self, formatter: Formatter = PAYLOAD) -> None:
        super().__init__()
        self.formatter = formatter
        self.closed = False
        self.publications: list[Publication] = []
        self.notices: list[tuple[str, str, dict[str, Any]]] = []
        self.deleted: list[str] = []
        self.presence: list[tuple[str, str, ClientInfo]] = []

    @property
    def offsets(self) -> list[tuple[str, int]]:
        return [(p.channel, p.offset) for p in self.publications]

    def deliver(self, pub: Publication, data: bytes) -> None:
        assert data == self.formatter.encode(pub)
        self.publications.append(pub)
        self.changed()

    def notice(self, kind: str, channel: str, fields: dict[str, Any]) -> None:
        self.notices.append((kind, channel, fields))
        self.changed()

    def channel_deleted(self, channel: str) -> None:
        self.deleted.append(channel)
        self.changed()

    def presence_event(self, kind: str, channel: str, info: ClientInfo) -> None:
        self.presence.append((kind, channel, info))
        self.changed()


class RecordingTransport(Waiting):
    """A ``ClientTransport`` for a ``tidings.core.client.Client`` in JSON: every reply and
    push it is given, decoded, in ``messages``; the disconnect it was closed with in
    ``closed_with``."""

    name = "recording"
    emulated = False
    unidirectional = False

    def __init__(self, codec: Codec = JSON) -> None:
        from tidings.server.centrifuge import DELTA_PAIRS, PushFormat, register

        super().__init__()
        self.codec = codec
        self.formatter: Formatter = register(PushFormat(codec, lambda payload: payload))
        self.delta_formats = DELTA_PAIRS[self.formatter]
        self.messages: list[dict[str, Any]] = []
        self.closed = False
        self.closed_with: codes.Disconnect | None = None

    def _record(self, data: bytes) -> None:
        for line in data.splitlines():
            if line.strip():
                self.messages.append(orjson.loads(line))
        self.changed()

    def send(self, data: bytes) -> None:
        self._record(data)

    def push(self, data: bytes) -> None:
        self._record(data)

    def close(self, disconnect: codes.Disconnect) -> None:
        self.closed = True
        self.closed_with = disconnect
        self.changed()

    def reply_to(self, cmd_id: int) -> dict[str, Any] | None:
        return next((m for m in self.messages if m.get("id") == cmd_id), None)

    def pushes(self, kind: str) -> list[dict[str, Any]]:
        """Pushes of one kind (``pub``, ``join``, ``unsubscribe``, …)."""
        return [m["push"] for m in self.messages if kind in m.get("push", {})]
