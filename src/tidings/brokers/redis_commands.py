"""Scripts to one Redis server on a connection of our own, pipelined without limit.

Redis answers the commands of one connection in the order it received them
(https://redis.io/docs/latest/develop/use/pipelining/), so a connection is an ordered
queue: what is asked in one loop iteration goes out in one write on the next, replies
settle their ``Later`` (``core/tick.py``) first in, first out — synchronously, in the
read callback, so an HTTP publish is answered there, with no task in between — and any
number of batches may be in flight: publications of a channel still reach Redis, and run,
in the order they were asked for. (Writing at the end of each HTTP read instead, as the
SQLite store commits, measured worse with publishers that keep few requests in flight:
docs/benchmarks.md, "On Redis".)

The connection is made on first use, and again on the first use after a loss. It loads
every script (``SCRIPT LOAD``) before anything else, so ``EVALSHA`` never misses on it; a
server that forgot them anyway (``SCRIPT FLUSH``), turned replica (``READONLY``, a Sentinel
failover) or is still loading is dropped, which fails what was in flight as
``BrokerUnavailable`` and makes the next use connect afresh (asking Sentinel for the
master). A reply that takes longer than ``timeout`` drops the connection too: a hung server
fails its callers within ``timeout``, it doesn't hold them.

Encoding is ``protocol.resp``; parsing is hiredis's, as on the PUB/SUB connections. A Redis
Cluster routes each key to its slot's master: that stays with redis-py (``Pipeliner``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis

from tidings.core.tick import Later, sends
from tidings.exceptions import BrokerError, BrokerUnavailable
from tidings.protocol.resp import encode_command, encode_commands

from .redis_pubsub import Endpoint, hello_commands, open_endpoint
from .redis_scripts import SCRIPT_SHAS, SCRIPTS

__all__ = ["Commands"]

log = logging.getLogger("tidings.redis")

# Error replies that say this connection, not the command, is at fault.
_DROP = (b"NOSCRIPT", b"READONLY", b"LOADING", b"MASTERDOWN")


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: Commands) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[Later[Any], float]] = deque()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        try:
            while (reply := reader.gets()) is not False:
                if not pending:
                    log.warning("redis %s: reply to nothing asked", self.owner.endpoint.address)
                    self.drop("out of step")
                    return
                later = pending.popleft()[0]
                if isinstance(reply, hiredis.ReplyError):
                    text = str(reply).encode()
                    if text.startswith(_DROP):
                        error = BrokerUnavailable(f"redis {self.owner.endpoint.address}: {reply}")
                        later.settle(error=error)
                        self.drop(str(reply))
                        return
                    later.settle(error=BrokerError(f"redis {self.owner.endpoint.address}: {reply}"))
                else:
                    later.settle(reply)
        except hiredis.ProtocolError as exc:
            self.drop(f"bad reply: {exc}")

    def drop(self, why: str) -> None:
        """Fail what is in flight and close: the next use makes a new connection."""
        if self.lost:
            return
        self.lost = True
        error = BrokerUnavailable(f"redis {self.owner.endpoint.address}: {why}")
        pending, self.pending = self.pending, deque()
        for later, _ in pending:
            later.settle(error=error)
        if self.transport is not None:
            self.transport.abort()
        self.owner._lost(self, why)

    def connection_lost(self, exc: Exception | None) -> None:
        self.drop(f"connection lost{f': {exc}' if exc else ''}")


class Commands:
    """``run(name, keys, args)`` → a ``Later`` of the reply of ``EVALSHA`` of the script
    ``name``."""

    def __init__(self, endpoint: Endpoint, *, timeout: float) -> None:
        self.endpoint = endpoint
        self.address = endpoint.address
        self.timeout = timeout
        self.failed_at = 0.0  # when a command last could not reach Redis; 0: it could since
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._queue: list[tuple[Sequence[Any], Later[Any]]] = []
        self._scheduled = False
        self._watch: asyncio.TimerHandle | None = None
        self._closed = False

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Later[Any]:
        later: Later[Any] = Later()
        self._queue.append((("EVALSHA", SCRIPT_SHAS[name], len(keys), *keys, *args), later))
        if not self._scheduled:
            self._scheduled = True
            sends().soon(self._flush)
        return later

    def _flush(self) -> None:
        self._scheduled = False
        proto = self._proto
        if proto is None or proto.lost:
            if self._connecting is None and self._queue:
                self._connecting = asyncio.ensure_future(self._connect())
                self._connecting.add_done_callback(self._connected)
            return
        self._send(proto)

    def _send(self, proto: _Protocol) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        assert proto.transport is not None
        now = time.monotonic()
        proto.pending.extend((later, now) for _, later in batch)
        proto.transport.write(encode_commands([command for command, _ in batch]))
        if self._watch is None:
            self._watch = asyncio.get_running_loop().call_later(self.timeout / 4, self._check)

    def _check(self) -> None:
        """Drop a connection whose oldest reply is overdue."""
        self._watch = None
        proto = self._proto
        if proto is None or proto.lost or not proto.pending:
            return
        if time.monotonic() - proto.pending[0][1] > self.timeout:
            log.warning("redis %s: no reply in %.1f s; reconnecting", self.address, self.timeout)
            proto.drop("timed out")
            return
        self._watch = asyncio.get_running_loop().call_later(self.timeout / 4, self._check)

    async def _connect(self) -> _Protocol:
        ep = self.endpoint
        proto: _Protocol | None = None
        try:
            async with asyncio.timeout(ep.connect_timeout):
                proto = await open_endpoint(ep, lambda: _Protocol(self))
                assert proto.transport is not None
                hello = hello_commands(ep) + [
                    encode_command("SCRIPT", "LOAD", body) for body in SCRIPTS.values()
                ]
                waits: list[Later[Any]] = [Later() for _ in hello]
                now = time.monotonic()
                proto.pending.extend((later, now) for later in waits)
                proto.transport.write(b"".join(hello))
                for later in waits:
                    await later
        except BaseException as exc:
            if proto is not None:
                proto.drop("connect failed")
            if isinstance(exc, OSError | TimeoutError):
                raise BrokerUnavailable(f"redis {ep.address}: {exc or 'timed out'}") from None
            raise
        return proto

    def _connected(self, task: asyncio.Task[_Protocol]) -> None:
        self._connecting = None
        if task.cancelled():
            error: BaseException = BrokerUnavailable(f"redis {self.address}: closed")
        elif (failure := task.exception()) is not None:
            error = failure
        else:
            proto = task.result()
            if self._closed:
                proto.drop("closed")
                return
            self._proto = proto
            self.failed_at = 0.0
            self._send(proto)
            return
        self.failed_at = time.monotonic()
        if not isinstance(error, BrokerError):
            error = BrokerUnavailable(f"redis {self.address}: {error}")
        log.warning("%s", error)
        queue, self._queue = self._queue, []
        for _, later in queue:
            later.settle(error=error)

    def _lost(self, proto: _Protocol, why: str) -> None:
        if proto is self._proto:
            self._proto = None
            if not self._closed:
                self.failed_at = time.monotonic()
                log.warning("redis %s: command connection dropped (%s)", self.address, why)

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._proto is not None:
            self._proto.drop("closed")
        queue, self._queue = self._queue, []
        for _, later in queue:
            later.settle(error=BrokerUnavailable(f"redis {self.address}: closed"))
