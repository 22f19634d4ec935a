"""Work batched within an event-loop iteration, and results settled by it.

A durable store commits many publishes in one transaction. It queues its commit with
``Tick.soon``; the commit runs at the latest on the next iteration, and earlier when a
front end calls ``Tick.flush`` at the end of a read callback — so the publishes read from
one socket read are committed together and can be answered in that same callback, as the
memory broker answers them, before the iteration's coalesced writes to subscribers go out
(docs/benchmarks.md, "Durable history on SQLite"). A publish committed that way is a
``Later``: its callbacks run synchronously when it settles, with no task or loop
iteration in between.

``sends()`` is a second pass per loop for commands bound for a broker (Redis scripts): it
runs on the next iteration, or first thing when a pass of writes to clients begins
(server/outbox.py), never at the end of each read (which split Redis's answers into more
replies, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Later", "Tick", "sends", "tick"]

log = logging.getLogger("tidings.tick")

_T = TypeVar("_T")
_U = TypeVar("_U")

Settled = Callable[[Any, BaseException | None], None]


class Later(Generic[_T]):
    """A result that a ``Tick`` pass settles: ``when_settled`` callbacks run synchronously
    then, with the value (or None) and the error (or None). Awaitable as well."""

    __slots__ = ("_callbacks", "_outcome")

    def __init__(self) -> None:
        self._callbacks: list[Settled] = []
        self._outcome: tuple[_T | None, BaseException | None] | None = None

    def settle(self, value: _T | None = None, error: BaseException | None = None) -> None:
        if self._outcome is not None:
            return
        self._outcome = (value, error)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(value, error)
            except Exception:
                log.exception("callback %r of a settled result failed", callback)

    def when_settled(self, callback: Callable[[_T | None, BaseException | None], None]) -> None:
        if self._outcome is not None:
            callback(*self._outcome)
        else:
            self._callbacks.append(callback)

    def then(self, step: Callable[[_T | None, BaseException | None], _U]) -> Later[_U]:
        """A ``Later`` of ``step``'s return value; what ``step`` raises is its error."""
        out: Later[_U] = Later()

        def settled(value: _T | None, error: BaseException | None) -> None:
            try:
                result = step(value, error)
            except Exception as exc:
                out.settle(error=exc)
            else:
                out.settle(result)

        self.when_settled(settled)
        return out

    def __await__(self) -> Generator[Any, None, _T]:
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()

        def settled(value: _T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)  # type: ignore[arg-type]

        self.when_settled(settled)
        return future.__await__()


class Tick:
    """One loop's batched work: ``soon`` queues a callback for the next pass."""

    __slots__ = ("_callbacks", "_handle", "_running")

    def __init__(self) -> None:
        # No reference to the loop: it is this object's key in a weak dictionary.
        self._callbacks: list[Callable[[], None]] = []
        self._handle: asyncio.Handle | None = None
        self._running = False

    def soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the next pass: on the next iteration or at a ``flush``."""
        self._callbacks.append(callback)
        if self._handle is None and not self._running:
            self._handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Run the pass now (a front end's read callback ends). Inside a pass, nothing:
        what its callbacks queue runs before that pass ends."""
        if self._running or not self._callbacks:
            return
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        self._running = True
        try:
            while self._callbacks:
                callbacks, self._callbacks = self._callbacks, []
                for callback in callbacks:
                    try:
                        callback()
                    except Exception:
                        log.exception("batched callback %r failed", callback)
        finally:
            self._running = False


_TICKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Tick] = weakref.WeakKeyDictionary()
_SENDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Tick] = weakref.WeakKeyDictionary()


def _of(table: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Tick], loop: Any) -> Tick:
    loop = loop or asyncio.get_running_loop()
    found = table.get(loop)
    if found is None:
        found = table[loop] = Tick()
    return found


def tick(loop: asyncio.AbstractEventLoop | None = None) -> Tick:
    """The ``Tick`` of ``loop`` (the running loop by default)."""
    return _of(_TICKS, loop)


def sends(loop: asyncio.AbstractEventLoop | None = None) -> Tick:
    """``loop``'s commands queued for a broker (Redis scripts): sent on the next iteration,
    or first thing when a pass of writes to clients begins, so that a broker's replies (and
    the publish answers waiting on them) don't wait for that pass to end."""
    return _of(_SENDS, loop)
