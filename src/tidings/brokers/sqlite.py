"""The durable single-node broker: streams kept in a SQLite file, delivery in memory.

A ``SqliteBackend`` keeps every stream (offset, epoch, meta TTL, history within each
namespace's size and TTL) and the idempotency keys in a SQLite file in WAL mode
(``sqlite_file.py``), and a copy of them in a ``MemoryBackend``, which answers reads and
does what the memory broker does: fan-out to the nodes in this process, presence, the
controller. A restarted process loads the file, so its streams keep their offsets and
epochs and clients resume exactly across the restart.

**Writes.** Publishes (and history removals, channel deletes) queue on the loop with a
``Later`` (``core/tick.py``); the loop's ``Tick`` turns the queue into one batch at the
end of the HTTP read that queued it, or else on the next loop iteration (in ``full``
sync mode always the latter): offsets are assigned in queue order from the committed
state and the batch is written in one transaction. Only when it has committed is the
batch applied to the memory copy, then every ``Later`` settled (an HTTP answer is written
by its callback), then its publications delivered — so an acknowledged publish is in the
file, and a failed commit (disk full, I/O error) fails the publishes of that batch with
``BrokerUnavailable`` and leaves no trace in memory: the next batch numbers from where
the last committed one ended.

**Why on the loop, at the end of the read.** The commit is one ``write`` of a few pages
in WAL mode (about 25 µs here; 170 µs with ``sync = "full"``, which adds an fsync). On a
thread, commits that end between two iterations split the deliveries into about twice
the writes to each subscriber, and fan-out cost follows the number of writes. Answering
before delivering matters as much: the publishers' answers go out before the
connections' coalesced writes, so the next publishes arrive while those are written and
join one batch — as with the memory broker, which answers in the read callback too. Both
measured in docs/benchmarks.md ("Durable history on SQLite"). Opening and loading the
file, which can take long, run on a thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from tidings.core.broker import Broker, HistoryQuery, PublishOptions, PublishResult, StreamInfo
from tidings.core.clock import Clock, SystemClock
from tidings.core.publication import ClientInfo, HistoryResult, Publication, StreamPosition
from tidings.core.tick import Later, Tick, tick
from tidings.exceptions import BrokerUnavailable

from . import sqlite_file as sql
from .memory import SWEEP_INTERVAL, MemoryBackend, MemoryBroker, Stream

__all__ = ["SqliteBackend", "SqliteBroker"]

log = logging.getLogger("tidings.brokers.sqlite")

_NO_OPTIONS = PublishOptions()


@dataclass(slots=True, eq=False)
class _Op:
    """One queued write: ``pub`` (a publish), ``remove`` (its history) or ``delete``."""

    kind: str
    broker: SqliteBroker
    channel: str
    later: Later[Any]  # settled once the batch is committed, or has failed
    options: PublishOptions = _NO_OPTIONS
    data: bytes = b""
    is_json: bool = True
    event: str | None = None
    info: ClientInfo | None = None
    tags: dict[str, str] | None = None
    delta: bool = False
    # Set when the batch is formed:
    stream: Stream | None = None  # the stream the publication goes to
    pub: Publication | None = None  # None for a duplicate
    result: PublishResult | None = None


class _Pending:
    """A channel's stream as the batch being formed leaves it."""

    __slots__ = ("last", "offset", "stream", "ttl")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.offset = stream.offset
        self.ttl = stream.ttl
        self.last: _Op | None = None  # its last publish in the batch: the stream's row


class _Batch:
    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.statements: list[sql.Statement] = []
        self.streams: dict[str, _Pending] = {}
        self.keys: dict[tuple[str, str], PublishResult] = {}
        self.sweep = False


class SqliteBackend:
    """One SQLite store file and the memory copy that every node of this process shares.

    Opened by the first broker that starts and closed with the last; ``sync`` is SQLite's
    synchronous mode (``sqlite_file.SYNC_MODES``)."""

    def __init__(
        self,
        path: str,
        *,
        sync: str = "normal",
        clock: Clock | None = None,
        meta_ttl: float = 86400.0,
    ) -> None:
        self.path = path
        self.clock: Clock = clock or SystemClock()
        self.memory = MemoryBackend(clock=self.clock, meta_ttl=meta_ttl)
        self.file = sql.StoreFile(path, sync)
        self.error = ""  # why the last commit failed; "" once one succeeds
        self._users = 0
        self._lock = asyncio.Lock()
        self._queue: list[_Op] = []
        self._scheduled = False  # a commit is queued with the loop's Tick
        self._tick: Tick | None = None  # the loop's, while the file is open
        self._disk: dict[str, str] = {}  # channel → the epoch of its row in the file
        self._last_sweep = 0.0

    async def open(self) -> None:
        """Open and load the file for the first user; ``BrokerError`` when it can't be."""
        async with self._lock:
            if self._users == 0:
                loaded = await asyncio.to_thread(self.file.open, self.clock.time())
                self._load(loaded)
                self._tick = tick()
                log.info(
                    "history store %s: %d streams, %d publications",
                    self.path,
                    len(loaded.streams),
                    len(loaded.history),
                )
            self._users += 1

    def _load(self, loaded: sql.Loaded) -> None:
        memory, now, wall = self.memory, self.clock.monotonic(), self.clock.time()
        memory.streams.clear()
        memory.idempotent.clear()
        self._disk.clear()
        for channel, epoch, top, touched, meta_ttl, ttl in loaded.streams:
            stream = Stream(now - (wall - touched), meta_ttl, epoch)
            stream.offset, stream.ttl = top, ttl
            memory.restore(channel, stream)
            self._disk[channel] = epoch
        for row in loaded.history:
            held = memory.streams.get(row[0])
            if held is not None:
                held.history.append((now - (wall - row[2]), sql.publication_of(row, held.epoch)))
        for channel, key, expires, offset, epoch in loaded.idempotency:
            result = PublishResult(StreamPosition(offset, epoch))
            memory.remember(channel, key, now + (expires - wall), result)
        self._last_sweep = wall

    async def close(self) -> None:
        """Release one user; the last one waits for queued writes and closes the file."""
        async with self._lock:
            if self._users == 0:  # never opened (its start failed)
                return
            self._users -= 1
            if self._users > 0:
                return
            self._commit()  # what is queued is written before the file closes
            self._tick = None
            # On the loop, not a thread: a commit that an answer's callback queued must
            # not run on the connection while another thread closes it. What comes after
            # fails ("the store is closed").
            self.file.close()

    # the queue
    def submit(self, op: _Op) -> Later[Any]:
        """Queue ``op`` for the next commit (``core/tick.py``: at the end of the read that
        brought it, or on the next loop iteration; in ``full`` sync mode on the next
        iteration); its ``later`` is settled then."""
        if self._tick is None:
            raise BrokerUnavailable("history store is not open")
        self._queue.append(op)
        if not self._scheduled:
            self._scheduled = True
            if self.file.sync == "full":
                # An fsync per read would cost a publisher that sends one request at a
                # time an fsync per publish: one commit per loop iteration, for all reads.
                asyncio.get_running_loop().call_soon(self._commit)
            else:
                self._tick.soon(self._commit)
        return op.later

    def _commit(self) -> None:
        self._scheduled = False
        ops, self._queue = self._queue, []
        if not ops:
            return
        batch = self._form(ops)
        try:
            self.file.write(batch.statements)
        except Exception as exc:  # sqlite3.Error, or MemoryError and the like
            self._fail(ops, exc)
            return
        self.error = ""
        self._apply(ops, batch)

    def _form(self, ops: list[_Op]) -> _Batch:
        """The statements of ``ops`` with their offsets, from the committed state; nothing
        in memory changes but streams created as a read would create them."""
        batch = _Batch(self.clock.time())
        now = self.clock.monotonic()
        for op in ops:
            if op.kind == "pub":
                self._form_publish(op, batch, now)
            elif op.kind == "remove":
                batch.statements.append((sql.CLEAR_HISTORY, (op.channel,)))
            else:  # delete: later publishes in this batch start a stream with a new epoch
                self._stream_row(batch, op.channel)
                batch.statements.append((sql.CLEAR_HISTORY, (op.channel,)))
                batch.statements.append((sql.DELETE_STREAM, (op.channel,)))
                batch.streams[op.channel] = _Pending(Stream(now, self.memory.meta_ttl))
        for channel in list(batch.streams):
            self._stream_row(batch, channel)
        if batch.wall - self._last_sweep > SWEEP_INTERVAL:
            batch.statements.extend(sql.sweep_statements(batch.wall))
            batch.sweep = True
        return batch

    def _form_publish(self, op: _Op, batch: _Batch, now: float) -> None:
        channel, options = op.channel, op.options
        key = options.idempotency_key
        if key:
            first = batch.keys.get((channel, key))
            seen = replace(first, duplicate=True) if first else self.memory.seen(channel, key, now)
            if seen is not None:
                op.result = seen
                return
        pending = batch.streams.get(channel)
        if pending is None:
            stream = self.memory.stream(channel, options.meta_ttl)
            pending = batch.streams[channel] = _Pending(stream)
            if self._disk.get(channel) != stream.epoch:
                # The file may hold an earlier life of the channel (its meta expired).
                batch.statements.append((sql.CLEAR_HISTORY, (channel,)))
        pending.offset += 1
        pub = Publication(
            channel,
            pending.offset,
            pending.stream.epoch,
            op.data,
            op.is_json,
            op.event,
            info=op.info,
            tags=op.tags,
        )
        pub.delta = op.delta
        pub.exclude_client = options.exclude_client
        op.stream, op.pub = pending.stream, pub
        op.result = PublishResult(pub.position)
        if options.history_size > 0 and options.history_ttl > 0:
            batch.statements.append((sql.INSERT_HISTORY, sql.history_row(pub, batch.wall)))
            pending.ttl = options.history_ttl
        pending.last = op
        if key:
            batch.keys[(channel, key)] = op.result
            expires = batch.wall + options.idempotency_ttl
            batch.statements.append(
                (sql.INSERT_KEY, (channel, key, expires, pub.offset, pub.epoch))
            )

    def _stream_row(self, batch: _Batch, channel: str) -> None:
        """The row of the channel's stream (and its trim) after its publishes so far."""
        pending = batch.streams.get(channel)
        if pending is None or pending.last is None or pending.last.pub is None:
            return
        op, pub = pending.last, pending.last.pub
        pending.last = None
        options = op.options
        row = (channel, pub.epoch, pub.offset, batch.wall, options.meta_ttl, pending.ttl)
        batch.statements.append((sql.UPSERT_STREAM, row))
        if options.history_size > 0 and options.history_ttl > 0:
            oldest = pub.offset - options.history_size
            batch.statements.append((sql.TRIM_HISTORY, (channel, oldest)))

    def _apply(self, ops: list[_Op], batch: _Batch) -> None:
        """The committed batch: into memory, then acknowledged, then delivered — each in
        queue order."""
        memory = self.memory
        now = self.clock.monotonic()
        deliver: list[tuple[MemoryBroker, str, str, Any]] = []  # fan-outs, in queue order
        for op in ops:
            channel = op.channel
            if op.kind == "pub":
                pub, stream = op.pub, op.stream
                if pub is not None and stream is not None:
                    if memory.streams.get(channel) is not stream:
                        memory.restore(channel, stream)  # swept meanwhile, or deleted
                    memory.append(stream, pub, op.options, now)
                    self._disk[channel] = stream.epoch
                    key = op.options.idempotency_key
                    if key:
                        assert op.result is not None
                        memory.remember(channel, key, now + op.options.idempotency_ttl, op.result)
                    deliver.append((op.broker.memory, channel, "pub", pub))
            elif op.kind == "remove":
                held = memory.streams.get(channel)
                if held is not None:
                    held.history.clear()
            else:
                memory.streams.pop(channel, None)
                self._disk.pop(channel, None)
                deliver.append((op.broker.memory, channel, "deleted", channel))
        if batch.sweep:
            self._last_sweep = batch.wall
            memory.sweep(now)
        # Memory holds the whole batch before anyone hears of it: an answer's callback
        # may queue the next publish, numbered from here. Answers before delivery: the
        # publishers' next requests then come while the subscribers' writes go out.
        for op in ops:
            op.later.settle(op.result)
        for broker, channel, kind, item in deliver:
            broker.fan_out(channel, kind, item)

    def _fail(self, ops: list[_Op], exc: BaseException) -> None:
        reason = str(exc) if isinstance(exc, sqlite3.Error) else type(exc).__name__
        self.error = f"history store {self.path}: write failed: {reason}"
        log.error("%s (%d operations failed, nothing of them kept)", self.error, len(ops))
        for op in ops:
            op.later.settle(error=BrokerUnavailable(f"history store write failed: {reason}"))


class SqliteBroker(Broker):
    """A node's broker on a ``SqliteBackend``: writes go through the store's batches;
    reads, delivery and subscriptions are its memory broker's."""

    def __init__(self, backend: SqliteBackend) -> None:
        self.backend = backend
        self.memory = MemoryBroker(backend.memory)

    def set_handler(self, handler: Any) -> None:
        super().set_handler(handler)
        self.memory.set_handler(handler)

    async def start(self) -> None:
        await self.backend.open()

    async def aclose(self) -> None:
        await self.memory.aclose()
        await self.backend.close()

    def health(self) -> str:
        return self.backend.error

    def _submit(self, kind: str, channel: str, **fields: Any) -> Later[Any]:
        return self.backend.submit(_Op(kind, self, channel, Later(), **fields))

    def publish_nowait(
        self,
        channel: str,
        data: bytes,
        options: PublishOptions,
        *,
        is_json: bool = True,
        event: str | None = None,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        delta: bool = False,
    ) -> Later[PublishResult]:
        fields = {"is_json": is_json, "event": event, "info": info, "tags": tags}
        return self._submit("pub", channel, options=options, data=data, delta=delta, **fields)

    async def publish(
        self,
        channel: str,
        data: bytes,
        options: PublishOptions,
        *,
        is_json: bool = True,
        event: str | None = None,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        delta: bool = False,
    ) -> PublishResult:
        later = self.publish_nowait(
            channel, data, options, is_json=is_json, event=event, info=info, tags=tags, delta=delta
        )
        result: PublishResult = await later
        return result

    async def remove_history(self, channel: str) -> None:
        await self._submit("remove", channel)

    async def delete_channel(self, channel: str) -> None:
        await self._submit("delete", channel)

    async def history(self, channel: str, query: HistoryQuery) -> HistoryResult:
        return await self.memory.history(channel, query)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self.memory.publish_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self.memory.publish_leave(channel, info)

    async def subscribe(self, channel: str) -> None:
        await self.memory.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.memory.unsubscribe(channel)

    async def stream_info(self, channels: Sequence[str]) -> dict[str, StreamInfo]:
        return await self.memory.stream_info(channels)

    async def channels(self, prefix: str = "", limit: int = 10000) -> list[str]:
        return await self.memory.channels(prefix, limit)
