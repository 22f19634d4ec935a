"""Hooks: the application's Python functions for connection events (``Conn``, what they
are given, is in conn.py).

A ``Hooks`` registry holds functions per event — ``connect``, ``message``, ``subscribe``,
``unsubscribe``, ``publish``, ``rpc`` (per method), ``error``, ``disconnect``, ``finish`` —
each optionally bound to channels by a regular expression. On an ``App`` it also runs them:
``async def`` hooks on the event loop, plain ``def`` hooks in a thread pool (so they may
block on a database), each bounded by a timeout.

Theory of operation
-------------------
The front ends call the runner at fixed points of a connection's life; a connection runs
its events one after another. Several hooks of one event run in registration order. A hook
bound to a pattern runs when the event's channel matches (``re.search``); for events without
a channel of their own (``rpc``, a client-protocol ``message``, ``disconnect``, ``finish``)
it runs when one of the connection's channels matches.

``Reject(code, reason)`` refuses the action and stops the hooks after it. Any other
exception (or the timeout) is logged, passed to the ``error`` hooks and raised as
``HookError``, which the front ends answer as an internal error: the exception's text never
reaches the client. ``unsubscribe``, ``disconnect``, ``finish`` and ``error`` hooks can't
refuse anything: what they raise is logged.

Nothing here runs when no hook is registered: the front ends test the event's list first,
and the delivery path never looks at hooks.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from tidings.exceptions import HookError, Reject

from .conn import NO_CHANGE, Conn, Publish, decode_data, encode_data

__all__ = ["EVENTS", "Hook", "Hooks", "default_hooks"]

log = logging.getLogger("tidings.hooks")

EVENTS = (
    "connect",
    "message",
    "subscribe",
    "unsubscribe",
    "publish",
    "rpc",
    "refresh",
    "sub_refresh",
    "error",
    "disconnect",
    "finish",
)


@dataclass(frozen=True, slots=True)
class Hook:
    """One registered function: its event, its channel pattern, its RPC method."""

    event: str
    fn: Callable[..., Any]
    pattern: re.Pattern[str] | None = None
    method: str = ""
    is_async: bool = False

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))

    def matches(self, channel: str | None, channels: Callable[[], Iterable[str]]) -> bool:
        pattern = self.pattern
        if pattern is None:
            return True
        if channel is not None:
            return pattern.search(channel) is not None
        return any(pattern.search(ch) is not None for ch in channels())


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects' own method
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


_F = TypeVar("_F", bound=Callable[..., Any])
_Pattern = str | re.Pattern[str] | None  # a channel pattern


class Hooks:
    """Hooks by event; on an ``App`` also their runner (``timeout`` seconds a call, at
    most ``threads`` plain hooks at once).

    Register with decorators — ``@hooks.on_connect``, ``@hooks.on_subscribe(channel=r"^room-")``,
    ``@hooks.on_rpc("echo")`` — or ``add(event, fn, channel=..., method=...)``.
    """

    def __init__(self, *, timeout: float = 5.0, threads: int = 16) -> None:
        self.timeout = timeout
        self.threads = threads
        self.lists: dict[str, list[Hook]] = {event: [] for event in EVENTS}
        self._executor: ThreadPoolExecutor | None = None
        # Threads still running a plain hook whose caller gave up on it (its timeout came):
        # Python can't stop them, so while every thread is held so, plain hooks fail at
        # once instead of queueing behind them.
        self.stuck = 0

    def __bool__(self) -> bool:
        return any(self.lists.values())

    def has(self, event: str) -> bool:
        return bool(self.lists[event])

    def add(
        self,
        event: str,
        fn: Callable[..., Any],
        *,
        channel: str | re.Pattern[str] | None = None,
        method: str = "",
    ) -> Hook:
        """Register ``fn`` for ``event``; ``channel`` is a regular expression."""
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r} (known: {', '.join(EVENTS)})")
        if not callable(fn):
            raise TypeError(f"a hook must be callable, not {fn!r}")
        if event == "connect" and channel is not None:
            raise ValueError("on_connect hooks can't be bound to channels")
        if event == "rpc" and not (isinstance(method, str) and method):
            raise ValueError("on_rpc needs the method name")
        pattern = re.compile(channel) if isinstance(channel, str) else channel
        hook = Hook(event, fn, pattern, method, _is_async(fn))
        self.lists[event].append(hook)
        return hook

    def extend(self, other: Hooks | Iterable[Hook]) -> None:
        """Add every hook of ``other``, in its order, after the ones here."""
        items = (
            [h for hooks in other.lists.values() for h in hooks]
            if isinstance(other, Hooks)
            else list(other)
        )
        for hook in items:
            self.lists[hook.event].append(hook)

    def of_module(self, module: str) -> list[Hook]:
        """The hooks here whose function was defined in ``module`` or below it."""
        return [
            hook
            for hooks in self.lists.values()
            for hook in hooks
            if (getattr(hook.fn, "__module__", "") or "") == module
            or (getattr(hook.fn, "__module__", "") or "").startswith(module + ".")
        ]

    @overload
    def _decorator(self, event: str, fn: _F, channel: _Pattern, method: str = "") -> _F: ...
    @overload
    def _decorator(
        self, event: str, fn: None, channel: _Pattern, method: str = ""
    ) -> Callable[[_F], _F]: ...
    def _decorator(
        self, event: str, fn: _F | None, channel: _Pattern, method: str = ""
    ) -> _F | Callable[[_F], _F]:
        if fn is not None:
            self.add(event, fn, channel=channel, method=method)
            return fn

        def register(func: _F) -> _F:
            self.add(event, func, channel=channel, method=method)
            return func

        return register

    # registration; each works bare (``@hooks.on_message``) or called with a channel
    @overload
    def on_connect(self, fn: _F) -> _F: ...
    @overload
    def on_connect(self, fn: None = None) -> Callable[[_F], _F]: ...
    def on_connect(self, fn: _F | None = None) -> _F | Callable[[_F], _F]:
        """``fn(conn, context)``: a connection is opening; ``Reject`` refuses it. May set
        ``conn.user``, or return a dict of ``user``, ``info``, ``data``, ``channels``,
        ``expire_at`` (the client protocol's connect result). Registered, they also decide
        about client-protocol connections without a token."""
        return self._decorator("connect", fn, None)

    @overload
    def on_message(self, fn: _F, *, channel: _Pattern = None) -> _F: ...
    @overload
    def on_message(self, fn: None = None, *, channel: _Pattern = None) -> Callable[[_F], _F]: ...
    def on_message(
        self, fn: _F | None = None, *, channel: _Pattern = None
    ) -> _F | Callable[[_F], _F]:
        """``fn(conn, context, channel, message)``: the client sent a message (the client
        protocol's ``send``, with ``channel`` None; on ``/ws``, once per channel)."""
        return self._decorator("message", fn, channel)

    @overload
    def on_subscribe(self, fn: _F, *, channel: _Pattern = None) -> _F: ...
    @overload
    def on_subscribe(self, fn: None = None, *, channel: _Pattern = None) -> Callable[[_F], _F]: ...
    def on_subscribe(
        self, fn: _F | None = None, *, channel: _Pattern = None
    ) -> _F | Callable[[_F], _F]:
        """``fn(conn, context, channel)``: before subscribing; ``Reject`` refuses it. May
        return a dict of ``info``, ``data``, ``expire_at`` (the subscription's)."""
        return self._decorator("subscribe", fn, channel)

    @overload
    def on_unsubscribe(self, fn: _F, *, channel: _Pattern = None) -> _F: ...
    @overload
    def on_unsubscribe(
        self, fn: None = None, *, channel: _Pattern = None
    ) -> Callable[[_F], _F]: ...
    def on_unsubscribe(
        self, fn: _F | None = None, *, channel: _Pattern = None
    ) -> _F | Callable[[_F], _F]:
        """``fn(conn, context, channel)``: the connection left a channel while connected."""
        return self._decorator("unsubscribe", fn, channel)

    @overload
    def on_publish(self, fn: _F, *, channel: _Pattern = None) -> _F: ...
    @overload
    def on_publish(self, fn: None = None, *, channel: _Pattern = None) -> Callable[[_F], _F]: ...
    def on_publish(
        self, fn: _F | None = None, *, channel: _Pattern = None
    ) -> _F | Callable[[_F], _F]:
        """``fn(conn, context, channel, data)``: a client publishes; ``Reject`` refuses,
        a value other than None replaces the data."""
        return self._decorator("publish", fn, channel)

    def on_rpc(self, method: str, *, channel: _Pattern = None) -> Callable[[_F], _F]:
        """``fn(conn, context, data)``: the client's RPC ``method``; the first hook that
        returns something other than None answers with it. ``"*"``: every method, after
        the method's own hooks, called as ``fn(conn, context, data, method)``."""
        return self._decorator("rpc", None, channel, method)

    @overload
    def on_refresh(self, fn: _F, *, channel: _Pattern = None) -> _F: ...
    @overload
    def on_refresh(self, fn: None = None, *, channel: _Pattern = None) -> Callable[[_F], _F]: ...
    def on_refresh(
        self, fn: _F | None = None, *, channel: _Pattern = None
    ) -> _F | Callable[[_F], _F]:
        """``fn(conn, context)``: the connection's ``expire_at`` has come; return
        ``{"expire_at": ...}`` (and ``"info"``) to extend it, ``{"expired": True}`` or
        nothing to let it expire (3005)."""
        return self._decorator("refresh", fn, channel)

    @overload
    def on_sub_refresh(self, fn: _F, *, channel: _Pattern = None) -> _F: ...
    @overload
    def on_sub_refresh(
        self, fn: None = None, *, channel: _Pattern = None
    ) -> Callable[[_F], _F]: ...
    def on_sub_refresh(
        self, fn: _F | None = None, *, channel: _Pattern = None
    ) -> _F | Callable[[_F], _F]:
        """``fn(conn, context, channel)``: a subscription's ``expire_at`` has come; as
        ``on_refresh``, for the subscription (2501 when it expires)."""
        return self._decorator("sub_refresh", fn, channel)

    @overload
    def on_error(self, fn: _F, *, channel: _Pattern = None) -> _F: ...
    @overload
    def on_error(self, fn: None = None, *, channel: _Pattern = None) -> Callable[[_F], _F]: ...
    def on_error(
        self, fn: _F | None = None, *, channel: _Pattern = None
    ) -> _F | Callable[[_F], _F]:
        """``fn(conn, context, exception)``: another hook failed or timed out."""
        return self._decorator("error", fn, channel)

    @overload
    def on_disconnect(self, fn: _F, *, channel: _Pattern = None) -> _F: ...
    @overload
    def on_disconnect(self, fn: None = None, *, channel: _Pattern = None) -> Callable[[_F], _F]: ...
    def on_disconnect(
        self, fn: _F | None = None, *, channel: _Pattern = None
    ) -> _F | Callable[[_F], _F]:
        """``fn(conn, context)``: a connection that had connected has closed;
        ``conn.channels`` are those it had."""
        return self._decorator("disconnect", fn, channel)

    @overload
    def on_finish(self, fn: _F, *, channel: _Pattern = None) -> _F: ...
    @overload
    def on_finish(self, fn: None = None, *, channel: _Pattern = None) -> Callable[[_F], _F]: ...
    def on_finish(
        self, fn: _F | None = None, *, channel: _Pattern = None
    ) -> _F | Callable[[_F], _F]:
        """``fn(conn, context)``: last, for every connection ``on_connect`` saw (also the
        refused ones), after ``on_disconnect``."""
        return self._decorator("finish", fn, channel)

    # running
    def close(self) -> None:
        """Stop the thread pool; plain hooks still running finish on their own."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="tidings-hook")
        return self._executor

    async def _call(
        self, hook: Hook, conn: Conn, args: tuple[Any, ...], channel: str | None
    ) -> Any:
        try:
            if hook.is_async:
                # Awaited in this task (no task of its own): a hook that doesn't suspend ends
                # in the same loop iteration, so what it publishes is coalesced with the rest.
                async with asyncio.timeout(self.timeout):
                    return await hook.fn(conn, conn.context, *args)
            return await self._in_thread(hook, conn, args)
        except Reject:
            raise
        except TimeoutError as exc:
            log.error("%s hook %s: no answer within %ss", hook.event, hook.name, self.timeout)
            error: Exception = exc
        except HookError as exc:
            # A failure the hook expected and described (an HTTP proxy's backend down).
            log.warning("%s hook %s: %s", hook.event, hook.name, exc)
            error = exc
        except Exception as exc:
            log.error("%s hook %s failed", hook.event, hook.name, exc_info=exc)
            error = exc
        if hook.event != "error":
            await self.notify("error", conn, error, channel=channel)
        raise HookError(f"{hook.event} hook {hook.name} failed")

    async def _in_thread(self, hook: Hook, conn: Conn, args: tuple[Any, ...]) -> Any:
        if self.stuck >= self.threads:
            raise HookError(f"all {self.threads} hook threads still run hooks past their timeout")
        loop = asyncio.get_running_loop()
        done = self._pool().submit(functools.partial(hook.fn, conn, conn.context, *args))
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.wrap_future(done)
        except TimeoutError:
            # Not started yet: it never will. Started: the thread is held until it ends.
            if not done.cancel():
                self.stuck += 1
                done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._unstick))
            raise

    def _unstick(self) -> None:
        self.stuck -= 1

    def _matching(self, event: str, conn: Conn, channel: str | None) -> list[Hook]:
        return [h for h in self.lists[event] if h.matches(channel, lambda: conn.channels)]

    async def run(self, event: str, conn: Conn, *args: Any, channel: str | None = None) -> None:
        """Run the event's hooks in order; ``Reject`` and ``HookError`` propagate."""
        for hook in self._matching(event, conn, channel):
            await self._call(hook, conn, args, channel)

    async def notify(self, event: str, conn: Conn, *args: Any, channel: str | None = None) -> None:
        """Run the event's hooks in order; nothing they raise propagates (logged)."""
        for hook in self._matching(event, conn, channel):
            try:
                await self._call(hook, conn, args, channel)
            except Reject as exc:
                log.info("%s hook %s: Reject ignored (%s)", event, hook.name, exc.code)
            except HookError:
                pass  # logged where it failed

    async def publish(
        self, conn: Conn, channel: str, data: bytes, is_json: bool
    ) -> tuple[bytes, bool, Publish]:
        """The data to publish after every ``publish`` hook had its say, and how (a
        ``Publish`` a hook returned; later hooks' fields win, their tags add up)."""
        hooks = self._matching("publish", conn, channel)
        if not hooks:
            return data, is_json, NO_CHANGE
        value = decode_data(data, is_json)
        changed = False
        how = NO_CHANGE
        for hook in hooks:
            result = await self._call(hook, conn, (channel, value), channel)
            if isinstance(result, Publish):
                how = how.then(result)
                if result.changes_data:
                    value, changed = result.data, True
            elif result is not None:
                value, changed = result, True
        if not changed:
            return data, is_json, how
        try:
            payload, payload_json = encode_data(value)
        except TypeError as exc:
            log.error("publish hook returned data JSON can't hold: %s", exc)
            await self.notify("error", conn, exc, channel=channel)
            raise HookError("publish hook returned bad data") from None
        return payload, payload_json, how

    async def rpc(
        self, conn: Conn, method: str, data: bytes, is_json: bool
    ) -> tuple[bool, tuple[bytes, bool] | None]:
        """(whether a hook serves ``method``, its answer as (payload, is_json) or None)."""
        matching = self._matching("rpc", conn, None)
        hooks = [h for h in matching if h.method == method]
        hooks += [h for h in matching if h.method == "*"]  # every method: last
        if not hooks:
            return False, None
        value = decode_data(data, is_json) if data else None
        for hook in hooks:
            args = (value, method) if hook.method == "*" else (value,)
            result = await self._call(hook, conn, args, None)
            if result is not None:
                try:
                    return True, encode_data(result)
                except TypeError as exc:
                    log.error("rpc hook %s returned data JSON can't hold: %s", hook.name, exc)
                    await self.notify("error", conn, exc)
                    raise HookError("rpc hook returned bad data") from None
        return True, None

    async def grants(
        self, event: str, conn: Conn, *args: Any, channel: str | None = None
    ) -> dict[str, Any]:
        """Run the event's hooks in order and merge the dicts they return (a later hook's
        keys win); ``Reject`` and ``HookError`` propagate. A hook that returns anything
        else but None or a dict is a ``HookError``."""
        merged: dict[str, Any] = {}
        for hook in self._matching(event, conn, channel):
            result = await self._call(hook, conn, args, channel)
            if result is None:
                continue
            if not isinstance(result, dict):
                log.error("%s hook %s returned %r, not a dict", event, hook.name, type(result))
                raise HookError(f"{event} hook {hook.name} returned {type(result).__name__}")
            merged.update(result)
        return merged


default_hooks = Hooks()
"""The registry ``from tidings import hooks`` gives; an ``App`` takes from it the hooks of
the modules its ``hooks`` setting names."""
