"""``FakeClock``: time that moves only when a test says so."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FakeClock", "FakeTimer"]


class FakeTimer:
    """A timer of a ``FakeClock``."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A ``tidings.core.clock.Clock`` for tests: ``advance(seconds)`` moves wall and
    monotonic time together and runs, in order, every timer that falls due on the way."""

    def __init__(self, start: float | None = None) -> None:
        self._wall = time.time() if start is None else start
        self._mono = 1000.0
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(self._mono + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running the timers due by then."""
        target = self._mono + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self._move(when)
            if not timer.cancelled:
                timer.callback(*timer.args)
        self._move(target)

    def _move(self, mono: float) -> None:
        self._wall += mono - self._mono
        self._mono = mono
