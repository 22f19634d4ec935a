"""Time as the core sees it: one object for wall time, monotonic time and timers.

Token expiry is wall time (JWT ``exp`` is a Unix time, RFC 7519 §4.1.4); history and
presence TTLs, heartbeats and timeouts are monotonic. Everything in core that waits or
expires goes through a ``Clock`` so that tests can move time with
``tidings.testing.FakeClock`` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Clock", "SystemClock", "Timer"]


class Timer(Protocol):
    """A scheduled callback."""

    def cancel(self) -> None:
        """Don't run it (a no-op once it ran)."""


class Clock(Protocol):
    """Wall time, monotonic time and timers."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` after ``delay`` seconds on the running loop."""


class SystemClock:
    """The real clock and the running event loop's timers."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback, *args)
