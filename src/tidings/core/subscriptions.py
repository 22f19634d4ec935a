"""One channel lifecycle: subscribe, recover, go live, leave; delivery with offset continuity.

Theory of operation
-------------------
The node keeps a ``ChannelState`` for every channel it has local subscribers in. The first
subscriber opens it: the broker subscription is made live, then the stream's top position
is read, and from then on the state knows the last offset it delivered. Every subscriber —
the first and all later ones — waits for that (``ready``) before reading history, so a
publication is either in what it reads or arrives live after it: never neither (with a
broker that, like Redis PUB/SUB, delivers only once SUBSCRIBE is done). Opening and closing
a channel are serialised through ``ready`` and ``closing``: a subscriber that comes while
the broker subscription is being dropped waits for that and opens the channel anew.

Subscribing is a transaction. ``Subscriptions.subscribe`` puts a stand-in (``Catchup``) in
the hub that holds the channel's live publications, reads history after the subscriber's
position and returns a ``SubscribeHandle``: the recovered publications, the position,
``recovered`` or the gap. The front end renders it — messages and a gap notice for the
simple endpoints, ``recovered: true/false`` in a subscribe reply for the client protocol —
and may still await its own steps (presence); any failure calls ``abort()``, which leaves
nothing behind. Then ``go_live()`` delivers what the stand-in held past the position and
puts the subscriber in its place. Should the channel not yet have delivered everything up
to that position (a remote broker's delivery can trail its history), the stand-in stays in
place and drops what the subscriber already has until the channel passes the position.

Delivery across nodes is at most once. For each publication the state checks offset
continuity: the next offset of the same epoch is delivered; an older one is a repeat and
dropped; a skipped offset or a new epoch holds delivery while history is read after the
last delivered offset, then delivers what was missed followed by what was held — in order,
nothing twice. When history can't fill the gap (trimmed, expired, a new epoch, more than
the recovery limit, the broker failing), every subscriber is told with a ``gap`` notice
first: the simple endpoints pass it on and deliver what history holds; a client-protocol
subscription that keeps a position is unsubscribed with "insufficient state" (2500) and
resubscribes from its own position.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tidings.exceptions import BrokerError

from .broker import TOP, HistoryQuery
from .publication import ClientInfo, Publication, StreamPosition

if TYPE_CHECKING:
    from .hub import Formatter, Subscriber
    from .node import Node

__all__ = ["Catchup", "ChannelState", "Gap", "SubscribeHandle", "Subscriptions"]

log = logging.getLogger("tidings.node")

Notice = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Gap:
    """Why publications after a position can't all be delivered: ``epoch`` (the stream was
    recreated), ``position`` (ahead of the stream), ``history`` (no longer held), ``limit``
    (more than the recovery limit) or ``broker`` (history could not be read)."""

    reason: str
    expected: int
    resumed_from: int
    epoch: str

    def fields(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "expected": self.expected,
            "resumed_from": self.resumed_from,
            "epoch": self.epoch,
        }


class Catchup:
    """Stands in the hub for a subscriber from its subscribe until it is live."""

    __slots__ = ("closed", "deleted", "floor", "formatter", "held", "owner", "sub")

    def __init__(self, sub: Subscriber, owner: Subscriptions) -> None:
        self.sub = sub
        self.owner = owner
        self.formatter: Formatter = sub.formatter
        self.closed = False
        self.deleted = False
        # Before go_live: publications and notices in arrival order. After: None.
        self.held: list[Publication | Notice] | None = []
        self.floor: StreamPosition | None = None  # after go_live: what the subscriber has

    @property
    def id(self) -> str | None:
        """The subscriber's connection id: a publication excluding it skips the stand-in."""
        return getattr(self.sub, "id", None)

    def excluded(self, pub: Publication) -> None:
        if self.held is None:
            excluded = getattr(self.sub, "excluded", None)
            if excluded is not None:
                excluded(pub)

    def deliver(self, pub: Publication, data: bytes) -> None:
        held = self.held
        if held is not None:
            held.append(pub)
            return
        floor = self.floor
        if floor is not None:
            if pub.epoch == floor.epoch and pub.offset <= floor.offset:
                if pub.offset == floor.offset:
                    self.floor = None
                    self.owner.swap_soon(pub.channel, self)
                return
            self.floor = None
            self.owner.swap_soon(pub.channel, self)
        self.sub.deliver(pub, data)

    def notice(self, kind: str, channel: str, fields: dict[str, Any]) -> None:
        if self.held is not None:
            self.held.append((kind, channel, fields))
        else:
            self.sub.notice(kind, channel, fields)

    def channel_deleted(self, channel: str) -> None:
        self.deleted = True
        if self.held is None:
            self.owner.forget(channel, self)
            self.sub.channel_deleted(channel)

    def presence_event(self, kind: str, channel: str, info: ClientInfo) -> None:
        if self.held is None:
            self.sub.presence_event(kind, channel, info)


class SubscribeHandle:
    """A subscribe in progress: what to render, then ``go_live()`` or ``abort()``.

    ``publications``: what history gave (to deliver, in order); ``position``: the position
    the subscriber has once those are delivered (None when nothing was read);
    ``recovered``: every publication after the requested position is in ``publications``;
    ``gap``: why not, when a position was given and they are not.
    """

    __slots__ = (
        "_catchup",
        "_done",
        "_owner",
        "_state",
        "channel",
        "gap",
        "position",
        "publications",
        "recovered",
    )

    def __init__(
        self,
        owner: Subscriptions,
        state: ChannelState,
        catchup: Catchup,
        publications: list[Publication],
        position: StreamPosition | None,
        recovered: bool,
        gap: Gap | None,
    ) -> None:
        self._owner = owner
        self._state = state
        self._catchup = catchup
        self._done = False
        self.channel = state.name
        self.publications = publications
        self.position = position
        self.recovered = recovered
        self.gap = gap

    def replay(self) -> None:
        """Give the subscriber what history gave, as the simple endpoints show it: the gap
        notice first, then the publications, through its own ``notice`` and ``deliver``."""
        sub = self._catchup.sub
        if self.gap is not None:
            sub.notice("gap", self.channel, self.gap.fields())
        fmt = sub.formatter
        for pub in self.publications:
            sub.deliver(pub, fmt.encode(pub))

    def go_live(self) -> StreamPosition | None:
        """Deliver what arrived since the read, past ``position``, and make the subscriber
        live; returns its position. A no-op after ``abort`` or when the subscriber left."""
        if self._done:
            return self.position
        self._done = True
        catchup, owner, state = self._catchup, self._owner, self._state
        sub, channel = catchup.sub, self.channel
        held = catchup.held or []
        catchup.held = None
        if catchup.closed:
            return self.position
        if catchup.deleted:
            owner.forget(channel, catchup)
            if not sub.closed:
                sub.channel_deleted(channel)
            return self.position
        if sub.closed or owner.states.get(channel) is not state:
            owner.forget(channel, catchup)
            return self.position
        position = self.position
        fmt = sub.formatter
        for item in held:
            if isinstance(item, Publication):
                if (
                    position is None
                    or item.epoch != position.epoch
                    or item.offset > position.offset
                ):
                    sub.deliver(item, fmt.encode(item))
                    position = item.position
            else:
                sub.notice(*item)
        self.position = position
        if position is None or state.has_delivered(position):
            owner.swap(channel, catchup)
        else:
            catchup.floor = position
        return position

    def abort(self) -> None:
        """Undo the subscribe: nothing of it is left in the node."""
        if self._done:
            return
        self._done = True
        self._catchup.held = None
        self._owner.forget(self.channel, self._catchup)


class ChannelState:
    """A channel this node has local subscribers in."""

    __slots__ = (
        "catchups",
        "closing",
        "delta",
        "delta_publish",
        "held",
        "last_data",
        "last_epoch",
        "last_offset",
        "name",
        "ready",
        "recheck",
        "waiting",
    )

    def __init__(self, name: str, delta: bool, delta_publish: bool) -> None:
        self.name = name
        self.ready: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None
        self.waiting = 0  # subscribers waiting for ``ready``
        self.catchups: dict[Subscriber, Catchup] = {}
        self.last_offset = 0
        self.last_epoch = ""
        # Live publications held while the position is read or a gap is filled.
        self.held: list[Publication] | None = []
        self.recheck = False  # a resync came while held: compare with the stream after
        self.delta = delta
        self.delta_publish = delta_publish
        self.last_data: tuple[bytes, bool] | None = None  # the previous payload, for deltas

    def has_delivered(self, position: StreamPosition) -> bool:
        return (
            self.held is None
            and self.last_epoch == position.epoch
            and self.last_offset >= position.offset
        )


class Subscriptions:
    """The node's channel states and the subscribe transaction (see the module docstring)."""

    def __init__(self, node: Node, recovery_limit: int) -> None:
        self.node = node
        self.hub = node.hub
        self.recovery_limit = recovery_limit
        self.states: dict[str, ChannelState] = {}

    # subscribing
    async def subscribe(
        self,
        sub: Subscriber,
        channel: str,
        since: StreamPosition | None = None,
        limit: int | None = None,
    ) -> SubscribeHandle:
        """Begin subscribing ``sub``: with ``since``, recover what came after it (at most
        ``limit``, default the recovery limit); without, ``limit`` asks for the newest
        publications (0: only the position); neither reads nothing."""
        state = await self._open(channel)
        catchup = Catchup(sub, self)
        state.catchups[sub] = catchup
        self.hub.add(channel, catchup)
        try:
            pubs, position, recovered, gap = await self._read(channel, since, limit)
        except BaseException:
            catchup.held = None
            self.forget(channel, catchup)
            raise
        return SubscribeHandle(self, state, catchup, pubs, position, recovered, gap)

    async def _open(self, channel: str) -> ChannelState:
        """The channel's state once its broker subscription is live and its position known."""
        while True:
            state = self.states.get(channel)
            if state is None:
                opts = self.node.namespaces.options(channel)
                state = ChannelState(channel, bool(opts.allowed_delta_types), opts.delta_publish)
                self.states[channel] = state
                state.ready = asyncio.ensure_future(self._sync(state))
                state.ready.add_done_callback(_retrieve)
            if state.closing is not None:
                await asyncio.shield(state.closing)
                continue
            ready = state.ready
            assert ready is not None
            if not ready.done():
                state.waiting += 1
                try:
                    await asyncio.shield(ready)  # its failure is every waiter's
                except BaseException:
                    state.waiting -= 1
                    self._maybe_close(state)  # the last waiter to give up closes it
                    raise
                state.waiting -= 1
                continue
            return state

    async def _sync(self, state: ChannelState) -> None:
        broker, channel = self.node.broker, state.name
        subscribed = False
        try:
            log.debug("broker subscribe %s", channel)
            await broker.subscribe(channel)
            subscribed = True
            top = (await broker.history(channel, TOP)).position
            log.debug("broker subscribed %s at %s", channel, top)
        except BaseException:
            if self.states.get(channel) is state:
                del self.states[channel]
            if subscribed:
                self.node.spawn(self._unsubscribe(channel))
            raise
        state.last_offset, state.last_epoch = top.offset, top.epoch
        held, state.held = state.held or [], None
        for pub in held:
            self.on_publication(pub)
        self._recheck(state)

    async def _read(
        self, channel: str, since: StreamPosition | None, limit: int | None
    ) -> tuple[list[Publication], StreamPosition | None, bool, Gap | None]:
        """What a subscriber gets from history: one read in the usual case."""
        if since is None:
            if limit is None:
                return [], None, False, None
            result = await self.node.broker.history(
                channel, HistoryQuery(limit=limit, reverse=True)
            )
            pubs = result.publications[::-1]
            return pubs, pubs[-1].position if pubs else result.position, False, None
        pubs, top, reason = await self._recover(
            channel, since, self.recovery_limit if limit is None else limit
        )
        position = pubs[-1].position if pubs else top
        if not reason:
            return pubs, position, True, None
        resumed = pubs[0].offset if pubs else top.offset + 1
        return pubs, position, False, Gap(reason, since.offset + 1, resumed, top.epoch)

    async def _recover(
        self, channel: str, since: StreamPosition, cap: int
    ) -> tuple[list[Publication], StreamPosition, str]:
        """The recovery rule: the publications after ``since``, at most ``cap``, the
        stream's top, and the gap's reason ("" when they are all there). When some can't
        be given (another epoch, more than ``cap``), the newest ``cap`` held are given."""
        result = await self.node.broker.history(channel, HistoryQuery(since=since, limit=cap + 1))
        top, pubs = result.position, result.publications
        reason = ""
        if since.epoch and since.epoch != top.epoch:
            reason = "epoch"
        elif since.offset > top.offset:
            reason = "position"
        elif since.offset < top.offset and (not pubs or pubs[0].offset != since.offset + 1):
            reason = "history"
        elif len(pubs) > cap:
            reason = "limit"
        if reason == "epoch" or len(pubs) > cap:
            pubs = await self._newest(channel, cap)
        return pubs, top, reason

    async def _newest(self, channel: str, count: int) -> list[Publication]:
        result = await self.node.broker.history(channel, HistoryQuery(limit=count, reverse=True))
        return result.publications[::-1]

    # leaving
    def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        """Remove ``sub`` (live, or still catching up) from ``channel``."""
        state = self.states.get(channel)
        if not self.hub.remove(channel, sub) and state is not None:
            catchup = state.catchups.get(sub)
            if catchup is not None:
                catchup.closed = True
                self.forget(channel, catchup)
                return
        if state is not None:
            self._maybe_close(state)

    def forget(self, channel: str, catchup: Catchup) -> None:
        """Take a stand-in out of the hub and the channel's books."""
        state = self.states.get(channel)
        self.hub.remove(channel, catchup)
        if state is not None:
            if state.catchups.get(catchup.sub) is catchup:
                del state.catchups[catchup.sub]
            self._maybe_close(state)

    def swap(self, channel: str, catchup: Catchup) -> None:
        """Put the subscriber in its stand-in's place."""
        state = self.states.get(channel)
        if state is not None and state.catchups.get(catchup.sub) is catchup:
            del state.catchups[catchup.sub]
        if not catchup.closed and self.hub.remove(channel, catchup):
            self.hub.add(channel, catchup.sub)

    def swap_soon(self, channel: str, catchup: Catchup) -> None:
        # Not now: the hub is iterating the group the stand-in is in.
        asyncio.get_running_loop().call_soon(self.swap, channel, catchup)

    def _maybe_close(self, state: ChannelState) -> None:
        channel = state.name
        if (
            state.closing is None
            and state.waiting == 0
            and state.ready is not None
            and state.ready.done()
            and channel not in self.hub
            and self.states.get(channel) is state
        ):
            state.closing = self.node.spawn(self._close(state))

    async def _close(self, state: ChannelState) -> None:
        try:
            await self._unsubscribe(state.name)
        finally:
            if self.states.get(state.name) is state:
                del self.states[state.name]

    async def _unsubscribe(self, channel: str) -> None:
        try:
            log.debug("broker unsubscribe %s", channel)
            await self.node.broker.unsubscribe(channel)
        except BrokerError as exc:
            # Late deliveries then find no channel state and are dropped.
            log.warning("broker unsubscribe of %s failed: %s", channel, exc)

    def channel_deleted(self, channel: str) -> None:
        for sub in self.hub.pop(channel):
            sub.channel_deleted(channel)
        state = self.states.get(channel)
        if state is not None:
            self._maybe_close(state)

    # delivery
    def on_publication(self, pub: Publication) -> None:
        state = self.states.get(pub.channel)
        if state is None:
            return
        held = state.held
        if held is not None:
            held.append(pub)
            return
        offset = pub.offset
        if pub.epoch != state.last_epoch or offset != state.last_offset + 1:
            if pub.epoch == state.last_epoch and offset <= state.last_offset:
                return  # a repeat: delivered already
            self._resync(state, pub)
            return
        state.last_offset = offset
        if state.delta:
            # Deltas are made against the channel's previous payload, in stream order.
            pub.prev = state.last_data
            state.last_data = (pub.data, pub.is_json)
            pub.delta = pub.delta or state.delta_publish
        self.hub.broadcast(pub)

    def _resync(self, state: ChannelState, pub: Publication) -> None:
        state.held = [pub]
        since = StreamPosition(state.last_offset, state.last_epoch)
        self.node.spawn(self._fill(state, since))

    async def _fill(self, state: ChannelState, since: StreamPosition) -> None:
        """Deliver what a gap after ``since`` missed, from history, then what was held."""
        channel = state.name
        try:
            pubs, top, reason = await self._recover(channel, since, self.recovery_limit)
        except BrokerError as exc:
            log.warning("history read to fill a gap in %s failed: %s", channel, exc)
            reason, pubs, top = "broker", [], since
        if self.states.get(channel) is not state:
            return
        held, state.held = state.held or [], None
        if reason:
            log.info("gap in %s after offset %d: %s", channel, since.offset, reason)
            after = pubs or held
            resumed, epoch = (
                (after[0].offset, after[0].epoch) if after else (top.offset + 1, top.epoch)
            )
            gap = Gap(reason, since.offset + 1, resumed, top.epoch)
            for sub in self.hub.subscribers(channel):
                sub.notice("gap", channel, gap.fields())
            state.last_offset, state.last_epoch = resumed - 1, epoch
        for pub in [*pubs, *held]:
            self.on_publication(pub)
        self._recheck(state)

    def resync(self, channels: list[str]) -> None:
        """Compare each channel with its stream, filling what delivery skipped (see
        ``BrokerEventHandler.on_resync``): a lost publication that no later one reveals
        is found this way."""
        for channel in channels:
            state = self.states.get(channel)
            if state is None:
                continue
            if state.held is not None:
                state.recheck = True  # its position is being read or a gap filled
                continue
            state.held = []
            self.node.spawn(self._fill(state, StreamPosition(state.last_offset, state.last_epoch)))

    def _recheck(self, state: ChannelState) -> None:
        if state.recheck and state.held is None and self.states.get(state.name) is state:
            state.recheck = False
            self.resync([state.name])


def _retrieve(task: asyncio.Task[None]) -> None:
    """A failed ``ready`` is raised in every waiter; mark it retrieved for asyncio."""
    if not task.cancelled():
        task.exception()
