"""The node: the public facade of one tidings process.

It publishes through the broker, fans the broker's publications out to local subscribers
through the hub, and subscribes with resume: a subscriber coming back with a position gets
every publication it missed that history still holds, in order and exactly once, and is told
explicitly (a ``gap`` notice) when history can't fill the gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .broker import Broker, PresenceManager, StreamInfo
from .channels import Namespaces, validate_channel
from .hub import Formatter, Hub, Subscriber
from .publication import ClientInfo, Publication

if TYPE_CHECKING:
    from .client import Client
    from .tokens import TokenVerifier

__all__ = ["Catchup", "MessageHandler", "Node", "Resume", "RpcHandler"]

RpcHandler = Callable[[ClientInfo, bytes], Awaitable[bytes | None]]
MessageHandler = Callable[[ClientInfo, bytes], Awaitable[None]]

log = logging.getLogger("tidings.node")


@dataclass(slots=True, frozen=True)
class Resume:
    """Where a subscriber resumes a channel: after ``offset`` of ``epoch`` (an empty epoch
    means the stream's current one), or with the ``last`` N publications."""

    offset: int | None = None
    epoch: str = ""
    last: int | None = None


class Catchup:
    """Stands in the hub for a subscriber while its history is read, so that publications
    arriving meanwhile are kept, not lost; they are replayed after history, without repeats."""

    __slots__ = ("closed", "formatter", "pending")

    def __init__(self, formatter: Formatter) -> None:
        self.formatter = formatter
        self.closed = False
        self.pending: list[Publication] = []

    def deliver(self, pub: Publication, data: bytes) -> None:
        self.pending.append(pub)

    def notice(self, kind: str, channel: str, fields: dict[str, Any]) -> None:
        pass

    def channel_deleted(self, channel: str) -> None:
        self.closed = True

    def presence_event(self, kind: str, channel: str, info: ClientInfo) -> None:
        pass


class Node:
    """Publish, subscribe with resume, history, delete, stats."""

    version = "tidings-0.1.0"

    def __init__(
        self,
        broker: Broker,
        namespaces: Namespaces | None = None,
        *,
        presence_manager: PresenceManager | None = None,
        token_verifier: TokenVerifier | None = None,
    ) -> None:
        from tidings.brokers.memory import MemoryPresenceManager

        self.id = str(uuid.uuid4())
        self.broker = broker
        self.presence_manager = presence_manager or MemoryPresenceManager()
        self.token_verifier = token_verifier
        self.namespaces = namespaces or Namespaces()
        self.hub = Hub()
        self.started = time.time()
        self.published = 0
        self.clients: dict[str, Client] = {}
        self.sessions: dict[str, Client] = {}  # by the session secret of emulated transports
        self.users: dict[str, set[Client]] = {}
        self.rpc_handlers: dict[str, RpcHandler] = {}
        self.message_handler: MessageHandler | None = None
        self._last_data: dict[str, tuple[bytes, bool]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        broker.set_handler(self)

    async def start(self) -> None:
        await self.broker.start()
        await self.presence_manager.start()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.broker.aclose()
        await self.presence_manager.aclose()

    # application hooks
    def on_rpc(self, method: str, handler: RpcHandler) -> None:
        """Answer client RPCs named ``method`` with ``await handler(caller, data)``."""
        self.rpc_handlers[method] = handler

    def on_message(self, handler: MessageHandler) -> None:
        """Receive the clients' asynchronous ``send`` messages."""
        self.message_handler = handler

    # client registry
    def register_client(self, client: Client) -> None:
        self.clients[client.id] = client
        self.sessions[client.session] = client
        self.users.setdefault(client.user, set()).add(client)

    def send_message(self, user: str, data: bytes) -> int:
        """Send ``data`` as a ``message`` push to every connection of ``user`` on this node;
        return how many got it."""
        clients = list(self.users.get(user, ()))
        for client in clients:
            client.send_message(data)
        return len(clients)

    def unregister_client(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        self.sessions.pop(client.session, None)
        users = self.users.get(client.user)
        if users is not None:
            users.discard(client)
            if not users:
                del self.users[client.user]

    # broker events
    def on_publication(self, pub: Publication) -> None:
        opts = self.namespaces.options(pub.channel)
        if opts.allowed_delta_types:
            # Deltas are made against the channel's previous payload, in stream order.
            pub.prev = self._last_data.get(pub.channel)
            self._last_data[pub.channel] = (pub.data, pub.is_json)
            pub.delta = pub.delta or opts.delta_publish
        self.hub.broadcast(pub)

    def on_channel_deleted(self, channel: str) -> None:
        for sub in self.hub.pop(channel):
            sub.channel_deleted(channel)

    def on_join(self, channel: str, info: ClientInfo) -> None:
        for sub in self.hub.subscribers(channel):
            sub.presence_event("join", channel, info)

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        for sub in self.hub.subscribers(channel):
            sub.presence_event("leave", channel, info)

    # publishing
    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        is_json: bool = True,
        event: str | None = None,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        skip_history: bool = False,
        delta: bool = False,
    ) -> tuple[Publication, int]:
        """Publish; return the publication and how many local subscribers it reached."""
        validate_channel(channel)
        if is_json and (b"\n" in data or b"\r" in data):
            # Raw CR/LF can only be whitespace in valid JSON; removing them keeps every
            # newline-framed wire format (NDJSON streams, the client protocol) intact.
            data = data.replace(b"\r", b"").replace(b"\n", b"")
        options = self.namespaces.options(channel)
        if skip_history:
            options = replace(options, history_size=0)
        pub = await self.broker.publish(
            channel,
            data,
            options=options,
            is_json=is_json,
            event=event,
            info=info,
            tags=tags,
            delta=delta,
        )
        self.published += 1
        return pub, self.hub.count(channel)

    async def delete_channel(self, channel: str) -> int:
        """Close the channel's subscribers (with a deleted notice) and drop its history."""
        validate_channel(channel)
        count = self.hub.count(channel)
        await self.broker.delete_channel(channel)
        return count

    async def stream_info(self, channel: str) -> StreamInfo | None:
        return await self.broker.stream_info(channel)

    # subscribing
    async def subscribe(
        self, sub: Subscriber, channel: str, resume: Resume | None = None
    ) -> tuple[int, str] | None:
        """Add ``sub`` to ``channel``; with ``resume``, first deliver what it missed and
        return the position of the last publication delivered (or the stream's top)."""
        if resume is None:
            if self.hub.add(channel, sub):
                await self.broker.subscribe(channel)
            return None
        catchup = await self.begin_catchup(sub, channel)
        try:
            last = await self._replay(sub, channel, resume)
        except BaseException:
            self.abort_catchup(channel, catchup)
            raise
        return self.end_catchup(channel, catchup, sub, last)

    async def begin_catchup(self, sub: Subscriber, channel: str) -> Catchup:
        """Hold ``channel``'s live publications for ``sub`` while its history is read."""
        catchup = Catchup(sub.formatter)
        if self.hub.add(channel, catchup):
            await self.broker.subscribe(channel)
        return catchup

    def end_catchup(
        self, channel: str, catchup: Catchup, sub: Subscriber, last: tuple[int, str]
    ) -> tuple[int, str]:
        """Deliver what arrived after ``last`` (the position the client has now) and put
        ``sub`` in the stand-in's place. Returns the client's new position."""
        if catchup.closed or sub.closed:
            self.abort_catchup(channel, catchup)
            if catchup.closed and not sub.closed:
                sub.channel_deleted(channel)
            return last
        fmt = sub.formatter
        for pub in catchup.pending:
            if pub.epoch != last[1] or pub.offset > last[0]:
                sub.deliver(pub, fmt.encode(pub))
                last = (pub.offset, pub.epoch)
        self.hub.replace(channel, catchup, sub)
        return last

    def abort_catchup(self, channel: str, catchup: Catchup) -> None:
        """Give up a catch-up (the subscribe failed or the client went away)."""
        self.unsubscribe(catchup, channel)

    async def _replay(self, sub: Subscriber, channel: str, resume: Resume) -> tuple[int, str]:
        """Deliver history per ``resume``; return the last position delivered (or the top)."""
        broker = self.broker
        fmt = sub.formatter
        if resume.last is not None:
            result = await broker.history(channel, limit=resume.last, reverse=True)
            pubs = result.publications[::-1]
        else:
            since = resume.offset or 0
            result = await broker.history(channel, since_offset=since)
            top = result.position
            pubs = result.publications
            reason = ""
            if resume.epoch and resume.epoch != top.epoch:
                reason = "epoch"
                pubs = (await broker.history(channel)).publications
            elif since > top.offset:
                reason = "position"
            elif since < top.offset and (not pubs or pubs[0].offset != since + 1):
                reason = "history"
            if reason:
                sub.notice(
                    "gap",
                    channel,
                    {
                        "reason": reason,
                        "expected": since + 1,
                        "resumed_from": pubs[0].offset if pubs else top.offset + 1,
                        "epoch": top.epoch,
                    },
                )
        for pub in pubs:
            sub.deliver(pub, fmt.encode(pub))
        if pubs:
            return pubs[-1].offset, pubs[-1].epoch
        return result.position.offset, result.position.epoch

    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        """Remove ``sub`` from ``channel``; the broker unsubscribe runs in the background."""
        if self.hub.remove(channel, sub):
            self.spawn(self._broker_unsubscribe(channel))

    async def _broker_unsubscribe(self, channel: str) -> None:
        if channel not in self.hub:
            await self.broker.unsubscribe(channel)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the node holds on to (the loop keeps only weak ones);
        its failure is logged, not lost."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())
