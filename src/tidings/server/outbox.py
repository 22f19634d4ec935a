"""Coalesced writes with a bound: the delivery half of every streaming connection.

``push`` only queues bytes; one ``Flusher`` callback per event-loop iteration (held a
little while the server is busy, at most ``write_delay``) writes each connection's queue
with a single ``transport.write`` (see docs/architecture.md, "hot path").
A connection whose unsent bytes (queued here plus held by the transport) pass
``max_outgoing_bytes`` is a slow consumer: it is cut off with a "slow" reason and may resume
from history when it comes back, so one stalled reader never grows the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import TYPE_CHECKING, ClassVar

from tidings.core.tick import sends

if TYPE_CHECKING:
    from .context import Context

__all__ = ["Flusher", "Outbox", "address"]

if TYPE_CHECKING:
    from tidings.app import App

log = logging.getLogger("tidings.server")


def address(peer: object) -> str:
    """A transport's ``peername`` as logs show it: ``127.0.0.1:5000``, ``[::1]:5000``."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer) if peer else "unknown"


# Ends after which what is still queued is dropped: a slow consumer couldn't take it (it
# resumes from history), and a client that closed or vanished is leaving (after its Close
# frame nothing but ours matters, RFC 6455 §5.5.1).
_UNWANTED = frozenset({"slow", "client", "lost"})


class Flusher:
    """Collects connections with queued bytes and flushes them all in one callback.

    An idle server writes at the end of the loop iteration that queued the bytes. A busy
    one, where a pass is asked for within the last pass's own length of its end, holds the
    next pass that long (at most ``write_delay``): what arrives meanwhile (other nodes'
    bursts over PUB/SUB, the next pipelined publishes) shares the writes, which are most
    of a delivery's cost, for no more latency than a pass adds anyway.
    """

    __slots__ = ("_app", "_cost", "_dirty", "_end", "_loop", "_most", "_scheduled", "_sends")

    def __init__(self, loop: asyncio.AbstractEventLoop, app: App) -> None:
        self._loop = loop
        self._app = app
        self._most = app.config.write_delay
        self._dirty: list[Outbox] = []
        self._scheduled = False
        self._cost = 0.0  # how long the last pass took
        self._end = 0.0  # when it ended (perf_counter)
        self._sends = sends(loop)

    def mark(self, conn: Outbox) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            cost = self._cost
            if cost and self._most and perf_counter() - self._end < cost:
                self._loop.call_later(min(cost, self._most), self._flush)
            else:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        # Broker commands queued in this iteration go out before the pass, which may take
        # milliseconds: the publish answers waiting on their replies don't wait for it.
        self._sends.flush()
        sent = 0
        start = perf_counter()  # not loop.time(): uvloop's counts whole milliseconds
        for conn in dirty:
            sent += conn.flush()
        self._end = end = perf_counter()
        self._cost = end - start
        self._app.bytes_out += sent  # once per iteration, not per write: for /metrics


class Outbox(asyncio.Protocol):
    """Base of streaming connections: bounded, coalesced outgoing bytes.

    Subclasses say how to part with a client (``goodbye``) and what to do on input.
    """

    __slots__ = ("_pending", "_room", "close_code", "close_reason", "closed", "ctx", "transport")

    kind: ClassVar[str] = "stream"

    def __init__(self, ctx: Context, transport: asyncio.Transport) -> None:
        self.ctx = ctx
        self.transport = transport
        self._pending: list[bytes] | None = None
        # Bytes that may still be queued before the client counts as slow: the bound less
        # what is queued here and what the transport held at the last write.
        self._room = ctx.config.max_outgoing_bytes
        self.closed = False
        # Why it ended, for the close log line and /metrics: the first cause recorded wins.
        self.close_reason = ""
        self.close_code = 0

    def push(self, data: bytes) -> None:
        """Queue ``data``; it is written at the end of this loop iteration."""
        if self.closed:
            return
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self.ctx.flusher.mark(self)
        else:
            pending.append(data)
        room = self._room - len(data)
        self._room = room
        if room < 0:
            self.slow()

    def flush(self) -> int:
        """Write what is queued; how many bytes."""
        pending = self._pending
        if pending is None or self.closed:
            return 0
        self._pending = None
        transport = self.transport
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        transport.write(data)
        self._room = self.ctx.config.max_outgoing_bytes - transport.get_write_buffer_size()
        return len(data)

    def ended(self, reason: str, code: int = 0) -> None:
        """Record why the connection ends: ``reason`` one of ``slow``, ``shutdown``,
        ``deleted``, ``error``, ``server`` (closed with ``code``), ``client`` (the peer
        closed, with its close code if it sent one), ``lost`` (gone without a word)."""
        if not self.close_reason:
            self.close_reason = reason
            self.close_code = code

    def slow(self) -> None:
        """Cut off a client that can't keep up; it resumes from history on return."""
        log.warning("slow consumer cut off: %s", self.describe())
        self.ctx.app.slow_disconnects += 1
        self.ended("slow")
        self.finish(self.goodbye("slow"))

    def finish(self, last: bytes = b"", *, wait_close: bool = False) -> None:
        """Stop delivering, write what is queued and ``last``, and close. With
        ``wait_close`` the peer is given time to answer (a WebSocket close handshake)
        before the connection is aborted; a peer that doesn't read what is left is aborted
        after the same grace period."""
        if self.closed:
            return
        self.closed = True
        pending, self._pending = self._pending, None
        # The hub may be iterating this connection's group right now (a slow consumer is
        # found inside fan-out), so leave the channels on the next loop iteration.
        loop = self.ctx.loop
        loop.call_soon(self.unsubscribe_all)
        transport = self.transport
        if transport.is_closing():
            return
        if pending and self.close_reason not in _UNWANTED:
            # Queued before the end (a hook's send before its disconnect, the last
            # publications before a shutdown): written ahead of the goodbye, not dropped.
            last = b"".join(pending) + last
        if last:
            transport.write(last)
        grace = self.ctx.config.shutdown_timeout
        if wait_close:
            loop.call_later(grace, transport.abort)
            return
        transport.close()
        if transport.get_write_buffer_size():
            loop.call_later(grace, transport.abort)

    def goodbye(self, reason: str) -> bytes:
        """The bytes that end the stream, saying why (``slow``, ``shutdown``, ``deleted``)."""
        return b""

    def unsubscribe_all(self) -> None:
        """Leave every channel; called once when the connection ends."""

    def opened(self, leftover: bytes) -> None:
        """The transport is this object's now; ``leftover``: bytes read past the request
        that started the stream (a WebSocket client may send right after its handshake)."""

    # Connection (tidings.app)
    def ping(self) -> None:
        """Streams without a heartbeat of their own have nothing to do."""

    def shutdown(self, reason: str) -> None:
        self.ended(reason)
        self.finish(self.goodbye(reason))

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    def describe(self) -> str:
        return f"{self.kind} connection from {self.remote}"

    @property
    def remote(self) -> str:
        return address(self.transport.get_extra_info("peername"))

    # asyncio.Protocol: delivery never awaits the transport, so flow control is ignored
    # and the outgoing bound above is what protects memory.
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended("lost")
        if not self.closed:
            self.closed = True
            self._pending = None
            self.unsubscribe_all()
        self.ctx.app.forget(self)
