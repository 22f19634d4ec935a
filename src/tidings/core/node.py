"""The node: the public facade of one tidings process.

It publishes through the broker, subscribes through the channel lifecycle
(``subscriptions.py``), keeps the registry of its connections (client-protocol clients by
id, session and user; simple streaming sessions by id), owns its presence entries
(refreshed while it lives, removed when it stops), runs the application's hooks
(``hooks.py``), and answers commands from other nodes through the controller
(``node_control.py``): out-of-band messages reach a connection on whichever node holds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from tidings.exceptions import BrokerError, NoSuchConnection

from .broker import Broker, HistoryQuery, PublishOptions, PublishResult, StreamInfo
from .channels import Namespaces, validate_channel
from .clock import Clock, SystemClock, Timer
from .conn import ConnEnd
from .control import Controller
from .hooks import Hooks
from .hub import Hub, Subscriber
from .latency import Latencies
from .message_log import MessageLog
from .presence import PresenceManager
from .publication import ClientInfo, HistoryResult, Publication, StreamPosition
from .subscriptions import SubscribeHandle, Subscriptions
from .tick import Later

if TYPE_CHECKING:
    from .client import Client
    from .tokens import TokenVerifier

__all__ = [
    "RECOVERY_LIMIT",
    "Node",
    "Published",
]

log = logging.getLogger("tidings.node")

RECOVERY_LIMIT = 300  # Centrifugo's client.recovery_max_publication_limit


@dataclass(frozen=True, slots=True)
class Published:
    """What a publish did: the stream position, the local subscribers reached, and whether
    it was a repeat of an idempotency key (nothing published)."""

    position: StreamPosition
    subscribers: int
    duplicate: bool = False


class Node:
    """Publish, subscribe with recovery, history, presence, clients, commands between nodes."""

    version = "tidings-0.1.0"

    def __init__(
        self,
        broker: Broker,
        presence_manager: PresenceManager,
        controller: Controller,
        namespaces: Namespaces | None = None,
        *,
        token_verifier: TokenVerifier | None = None,
        clock: Clock | None = None,
        recovery_limit: int = RECOVERY_LIMIT,
        name: str = "",
        hooks: Hooks | None = None,
        message_log: MessageLog | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.name = name or f"tidings-{self.id[:8]}"
        self.broker = broker
        self.presence_manager = presence_manager
        self.controller = controller
        self.token_verifier = token_verifier
        self.namespaces = namespaces or Namespaces()
        self.clock: Clock = clock or SystemClock()
        self.hub = Hub()
        self.subscriptions = Subscriptions(self, recovery_limit)
        self.started = time.time()
        self.published = 0
        # For /metrics: client-protocol commands by method, awaited broker calls by operation.
        self.command_latency = Latencies()
        self.broker_latency = Latencies()
        self.log_publications = False  # one info line per publication (``log_publications``)
        self.clients: dict[str, Client] = {}
        self.sessions: dict[str, Client] = {}  # by the session secret of emulated transports
        self.users: dict[str, set[Client]] = {}
        self.streams: dict[str, ConnEnd] = {}  # simple sessions (streams, long-polls), by id
        self.hooks = hooks if hooks is not None else Hooks()
        self.message_log = message_log
        self._present: dict[tuple[str, str], ClientInfo] = {}  # this node's presence entries
        self._refresh_timer: Timer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        broker.set_handler(self)
        controller.set_handler(self.id, self)

    async def start(self) -> None:
        await self.broker.start()
        await self.presence_manager.start()
        await self.controller.start()
        self._arm_refresh()

    async def aclose(self) -> None:
        """Leave the cluster: remove this node's presence entries, stop, release."""
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None
        for channel, client in list(self._present):
            try:
                await self.presence_manager.remove(channel, client)
            except Exception as exc:  # the entries expire by themselves
                log.warning("removing presence at shutdown failed: %s", exc)
                break
        self._present.clear()
        await self.controller.aclose()
        for task in list(self._tasks):
            task.cancel()
        await self.broker.aclose()
        await self.presence_manager.aclose()

    # client registry
    def register_client(self, client: Client) -> None:
        self.clients[client.id] = client
        self.sessions[client.session] = client
        self.users.setdefault(client.user, set()).add(client)

    def unregister_client(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        self.sessions.pop(client.session, None)
        users = self.users.get(client.user)
        if users is not None:
            users.discard(client)
            if not users:
                del self.users[client.user]

    def send_message(self, user: str, data: bytes) -> int:
        """Send ``data`` (JSON) as a ``message`` push to every connection of ``user`` on
        this node; return how many got it."""
        clients = list(self.users.get(user, ()))
        for client in clients:
            client.send_message(data, True)
        return len(clients)

    @property
    def wants_conns(self) -> bool:
        """Whether connections keep what hooks and the message log read (``Conn``)."""
        return bool(self.hooks) or self.message_log is not None

    # out-of-band messages
    def message_local(self, client_id: str, data: bytes, is_json: bool = True) -> bool:
        """Send ``data`` to the connection ``client_id`` if this node holds it."""
        end: ConnEnd | None = self.clients.get(client_id) or self.streams.get(client_id)
        if end is None or end.closed:
            return False
        end.send_message(data, is_json)
        return True

    def message_all_local(self, data: bytes, is_json: bool = True) -> int:
        """Send ``data`` to every connection of this node; how many got it."""
        ends: list[ConnEnd] = [*self.clients.values(), *self.streams.values()]
        count = 0
        for end in ends:
            if not end.closed:
                end.send_message(data, is_json)
                count += 1
        return count

    async def send(self, client_id: str, data: bytes, is_json: bool = True) -> None:
        """Send ``data`` to the connection ``client_id`` on whichever node holds it;
        ``NoSuchConnection`` when none does."""
        if self.message_local(client_id, data, is_json):
            return
        from .node_control import b64

        command = {"method": "message", "client": client_id, "b64data": b64(data), "json": is_json}
        answers = await self.controller.broadcast(command)
        if not any(answer.get("delivered") for answer in answers):
            raise NoSuchConnection(f"no connection {client_id!r} on any node")

    async def send_all(self, data: bytes, is_json: bool = True) -> int:
        """Send ``data`` to every connection on every node; how many got it."""
        from .node_control import b64

        command = {"method": "message", "all": True, "b64data": b64(data), "json": is_json}
        answers = await self.controller.broadcast(command)
        return sum(int(answer.get("delivered") or 0) for answer in answers)

    # broker events
    def on_publication(self, pub: Publication) -> None:
        self.subscriptions.on_publication(pub)

    def on_channel_deleted(self, channel: str) -> None:
        self.subscriptions.channel_deleted(channel)

    def on_resync(self, channels: list[str]) -> None:
        self.subscriptions.resync(channels)

    def on_join(self, channel: str, info: ClientInfo) -> None:
        for sub in self.hub.subscribers(channel):
            sub.presence_event("join", channel, info)

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        for sub in self.hub.subscribers(channel):
            sub.presence_event("leave", channel, info)

    # publishing
    def _prepare(
        self, channel: str, data: bytes, is_json: bool, skip_history: bool, key: str, exclude: str
    ) -> tuple[bytes, PublishOptions]:
        validate_channel(channel)
        if is_json and (b"\n" in data or b"\r" in data):
            # Raw CR/LF can only be whitespace in valid JSON; removing them keeps every
            # newline-framed wire format (NDJSON streams, the client protocol) intact.
            data = data.replace(b"\r", b"").replace(b"\n", b"")
        opts = PublishOptions.of(
            self.namespaces.options(channel),
            skip_history=skip_history,
            idempotency_key=key,
            exclude_client=exclude,
        )
        return data, opts

    def _published(self, channel: str, result: PublishResult) -> Published:
        subscribers = self.hub.count(channel)
        if not result.duplicate:
            self.published += 1
            if self.log_publications:
                pos = result.position
                log.info(
                    "published to %s at %d (%d subscribers here)",
                    channel,
                    pos.offset,
                    subscribers,
                    extra={
                        "fields": {
                            "event": "publish",
                            "channel": channel,
                            "offset": pos.offset,
                            "epoch": pos.epoch,
                            "subscribers": subscribers,
                        }
                    },
                )
        return Published(result.position, subscribers, result.duplicate)

    def publish_nowait(
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
        idempotency_key: str = "",
        exclude_client: str = "",
    ) -> Published | Later[Published] | None:
        """Publish synchronously where the broker can (in-process), or settled within this
        loop iteration (a ``Later``: a durable store's batch); None: use ``publish``.
        Raises ``InvalidChannel`` and the broker's errors as ``publish`` does."""
        data, opts = self._prepare(
            channel, data, is_json, skip_history, idempotency_key, exclude_client
        )
        result = self.broker.publish_nowait(
            channel, data, opts, is_json=is_json, event=event, info=info, tags=tags, delta=delta
        )
        if result is None:
            return None
        if isinstance(result, Later):
            return result.then(partial(self._settled, channel))
        log.debug("broker publish_nowait %s -> %s", channel, result)
        return self._published(channel, result)

    def _settled(
        self, channel: str, result: PublishResult | None, error: BaseException | None
    ) -> Published:
        if error is not None:
            raise error
        assert result is not None
        return self._published(channel, result)

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
        idempotency_key: str = "",
        exclude_client: str = "",
    ) -> Published:
        """Publish ``data`` (JSON, or UTF-8 text when not ``is_json``) to ``channel``; with
        ``exclude_client``, every subscriber but that connection gets it."""
        data, opts = self._prepare(
            channel, data, is_json, skip_history, idempotency_key, exclude_client
        )
        started = time.perf_counter()
        result = await self.broker.publish(
            channel, data, opts, is_json=is_json, event=event, info=info, tags=tags, delta=delta
        )
        self.broker_latency.observe("publish", time.perf_counter() - started)
        log.debug("broker publish %s -> %s", channel, result)
        return self._published(channel, result)

    async def history(self, channel: str, query: HistoryQuery) -> HistoryResult:
        log.debug("broker history %s %s", channel, query)
        started = time.perf_counter()
        try:
            return await self.broker.history(channel, query)
        finally:
            self.broker_latency.observe("history", time.perf_counter() - started)

    async def delete_channel(self, channel: str) -> int:
        """Close the channel's subscribers (with a deleted notice) and drop its stream."""
        validate_channel(channel)
        count = self.hub.count(channel)
        await self.broker.delete_channel(channel)
        return count

    async def stream_info(self, channels: Sequence[str]) -> dict[str, StreamInfo]:
        started = time.perf_counter()
        try:
            return await self.broker.stream_info(channels)
        finally:
            self.broker_latency.observe("stream_info", time.perf_counter() - started)

    # subscribing
    async def subscribe(
        self,
        sub: Subscriber,
        channel: str,
        since: StreamPosition | None = None,
        limit: int | None = None,
    ) -> SubscribeHandle:
        """Begin subscribing ``sub`` to ``channel`` (see ``Subscriptions.subscribe``);
        render the handle, then ``go_live()`` — or ``abort()`` on any failure."""
        log.debug("subscribe %s to %s (since %s, limit %s)", _who(sub), channel, since, limit)
        return await self.subscriptions.subscribe(sub, channel, since, limit)

    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        """Remove ``sub`` from ``channel``; the broker unsubscribe runs in the background."""
        log.debug("unsubscribe %s from %s", _who(sub), channel)
        self.subscriptions.unsubscribe(sub, channel)

    # presence
    async def add_presence(self, channel: str, info: ClientInfo) -> None:
        """Record ``info`` as present; this node refreshes the entry until it is removed."""
        await self.presence_manager.add(channel, info)
        self._present[(channel, info.client)] = info

    def remove_presence(self, channel: str, client: str) -> None:
        if self._present.pop((channel, client), None) is not None:
            self.spawn(self.presence_manager.remove(channel, client))

    def _arm_refresh(self) -> None:
        interval = max(1.0, self.presence_manager.ttl / 3)
        self._refresh_timer = self.clock.call_later(interval, self._refresh)

    def _refresh(self) -> None:
        self._arm_refresh()
        if self._present:
            self.spawn(self._refresh_entries(list(self._present.items())))

    async def _refresh_entries(self, entries: list[tuple[tuple[str, str], ClientInfo]]) -> None:
        try:
            for (channel, client), info in entries:
                if (channel, client) in self._present:
                    await self.presence_manager.add(channel, info)
        except BrokerError as exc:  # the next round tries again; entries live a whole TTL
            log.warning("refreshing presence failed: %s", exc)

    # commands from other nodes
    async def handle_control(self, command: dict[str, Any]) -> dict[str, Any]:
        from .node_control import handle

        return await handle(self, command)

    # tasks
    async def drain(self) -> None:
        """Wait until the node's background tasks (and those they start) are done."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

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


def _who(sub: object) -> str:
    """A subscriber as logs name it: its own ``describe()``, else its type."""
    describe = getattr(sub, "describe", None)
    return str(describe()) if callable(describe) else type(sub).__name__
