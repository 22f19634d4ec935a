"""The Publisher's transport seam: what a request is, what carries it, one pool per loop.

``Publisher`` builds a ``Call`` once — the payload encoded, the idempotency key drawn — and
hands it to its ``Transport`` for every attempt. A transport knows one way to the server
(``HttpTransport``: ``POST /pub``; others may write into a broker directly) and nothing of
encoding or retries. It answers a ``dict`` (for ``publish``: ``channel``, ``offset``,
``epoch``, ``id``, ``subscribers`` and, for a repeated key, ``duplicate``) or raises
``PublishError`` with ``retryable`` set for transient failures.

An asyncio connection belongs to the loop it was opened on, and a process may run many
loops in turn (``asyncio.run`` per call, Django's ``async_to_sync`` per request) or at once
(one per thread). ``LoopLocal`` keeps one pool per running loop, made on first use in it
and closed while that loop shuts down: ``asyncio.run``, ``asyncio.Runner`` and asgiref
finish by closing the loop's async generators, and each pool is tied to one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Call", "LoopLocal", "Transport"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Call:
    """One request, encoded once; every attempt sends the same bytes and the same key.

    ``method`` names what to do (``"publish"``); ``data`` is the payload, JSON when
    ``is_json`` else UTF-8 text; ``idempotency_key`` is "" when there is none (then the
    Publisher never retries). ``params`` holds what other methods need besides these.
    """

    method: str
    channel: str
    data: bytes
    is_json: bool
    event: str | None = None
    idempotency_key: str = ""
    params: dict[str, Any] = field(default_factory=dict)


class Transport(Protocol):
    """Carries a ``Call`` to the server: blocking (``call``) and from asyncio (``acall``,
    safe on any number of event loops)."""

    def call(self, call: Call) -> dict[str, Any]: ...

    async def acall(self, call: Call) -> dict[str, Any]: ...

    def close(self) -> None:
        """Close what blocking calls opened; pools of running loops close with them."""

    async def aclose(self) -> None:
        """``close``, and the pool of the running loop."""


@dataclass(slots=True)
class _Entry(Generic[_T]):
    loop: asyncio.AbstractEventLoop
    value: _T
    keeper: AsyncGenerator[None, None]


class LoopLocal(Generic[_T]):
    """One value per event loop: ``await get()`` makes it on first use in the running loop
    (``make()``); ``close(value)`` is awaited on that loop when it shuts down its async
    generators, or by ``aclose_current()``. Thread-safe: each thread may run its own loop.

    A loop closed without ``shutdown_asyncgens()`` (a bare ``loop.close()``) can't run
    ``close`` any more; its value is dropped at the next ``get`` and left to the garbage
    collector."""

    def __init__(self, make: Callable[[], _T], close: Callable[[_T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._lock = threading.Lock()
        # Keyed by id(loop); each entry holds its loop, so an id is not reused meanwhile.
        self._entries: dict[int, _Entry[_T]] = {}

    async def get(self) -> _T:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._entries.get(id(loop))
            if entry is not None and entry.loop is loop:
                return entry.value
            for key in [k for k, e in self._entries.items() if e.loop.is_closed()]:
                del self._entries[key]
            value = self._make()
            keeper = self._keep(loop, value)
            self._entries[id(loop)] = _Entry(loop, value, keeper)
        # The first step registers the generator with this loop (its asyncgen hooks), so
        # the loop's shutdown_asyncgens() closes it, and the value with it. It runs to its
        # first yield at once, without suspending.
        await keeper.__anext__()
        return value

    async def _keep(self, loop: asyncio.AbstractEventLoop, value: _T) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                entry = self._entries.get(id(loop))
                if entry is not None and entry.value is value:
                    del self._entries[id(loop)]
            await self._close(value)

    async def aclose_current(self) -> None:
        """Close the running loop's value, if it has one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._entries.get(id(loop))
        if entry is not None and entry.loop is loop:
            await entry.keeper.aclose()

    def __len__(self) -> int:
        """How many loops hold a value (closed loops not yet dropped included)."""
        return len(self._entries)
