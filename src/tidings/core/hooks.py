"""Hooks: the application's Python functions for connection events, and ``Conn``.

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
import contextlib
import functools
import http.cookies
import inspect
import logging
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import orjson

from tidings.exceptions import (
    BrokerError,
    HookError,
    InvalidChannel,
    NoSuchConnection,
    Reject,
)

from .channels import validate_channel
from .tick import Later

if TYPE_CHECKING:
    from tidings.protocol.http import Request

    from .node import Node

__all__ = [
    "EVENTS",
    "NO_CHANGE",
    "Conn",
    "ConnEnd",
    "Hook",
    "Hooks",
    "Publish",
    "decode_data",
    "default_hooks",
    "encode_data",
]

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


def decode_data(data: bytes, is_json: bool) -> Any:
    """A payload as a hook sees it: JSON decoded, text as ``str``, other bytes as they are."""
    if is_json:
        return orjson.loads(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def encode_data(value: Any) -> tuple[bytes, bool]:
    """What a hook gives as (payload, is_json): ``bytes`` as they are (JSON when they parse
    as JSON), anything else as JSON (``orjson.Fragment`` for JSON text already encoded).
    Raises ``TypeError`` for what JSON can't hold."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw, False
        return raw, True
    try:
        return orjson.dumps(value), True
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"hook data is not JSON serialisable: {exc}") from None


_UNCHANGED: Any = object()


@dataclass(frozen=True, slots=True)
class Publish:
    """What an ``on_publish`` hook may return besides new data: how to publish the client's
    publication (Centrifugo's publish proxy result). ``data`` replaces the payload (left
    out: unchanged); ``skip_history`` keeps it out of the channel's history; ``tags`` are
    attached to it (the client protocol delivers them); ``idempotency_key`` makes a repeat
    with the same key to the same channel within the idempotency window publish nothing;
    ``delta`` sends it as a fossil delta against the previous publication to subscribers
    that asked for deltas, where the namespace allows them. ``TypeError`` for values of
    other types."""

    data: Any = _UNCHANGED
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""
    delta: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.skip_history, bool):
            raise TypeError("skip_history must be a bool")
        if not isinstance(self.delta, bool):
            raise TypeError("delta must be a bool")
        tags = self.tags
        if tags is not None and not (
            isinstance(tags, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            raise TypeError("tags must be a dict of strings")
        key = self.idempotency_key
        if not isinstance(key, str) or len(key) > 128 or not key.isprintable():
            raise TypeError("idempotency_key must be a printable string of 128 at most")

    @property
    def changes_data(self) -> bool:
        return self.data is not _UNCHANGED

    def then(self, later: Publish) -> Publish:
        """This, with what a later hook's ``Publish`` says on top (its tags added)."""
        tags = {**(self.tags or {}), **(later.tags or {})} if later.tags else self.tags
        return Publish(
            later.data if later.changes_data else self.data,
            self.skip_history or later.skip_history,
            tags,
            later.idempotency_key or self.idempotency_key,
            self.delta or later.delta,
        )


NO_CHANGE = Publish()


class ConnEnd(Protocol):
    """The connection behind a ``Conn``: a client-protocol ``Client`` or a simple session."""

    id: str
    user: str
    closed: bool

    def send_message(self, data: bytes, is_json: bool) -> None:
        """Push ``data`` to the client outside any channel."""

    def close_with(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` (3000-4999) and ``reason``."""

    def hook_channels(self) -> list[str]:
        """The channels the connection is subscribed to now."""


class Conn:
    """One connection as hooks see it.

    ``id``, ``user`` (a hook of ``connect`` may set it), ``kind`` (``client`` for the
    client protocol, else ``ws``, ``sse``, ``stream``, ``lp``), ``transport`` (the client
    protocol's transport name, e.g. ``websocket``, ``sse``, ``http_stream``; the kind for
    the simple endpoints), ``protocol`` (``json`` or ``protobuf``), ``headers`` (lower-case
    names), ``cookies``, ``remote_addr``, ``channels``, ``context`` (a dict kept across the
    connection's events), and what a client-protocol connect carried: ``data`` (decoded),
    ``client_name``, ``client_version``.

    The methods may be called from any thread (plain hooks run in a thread pool); what they
    send is queued on the event loop in call order.
    """

    __slots__ = (
        "_cookies",
        "_final",
        "_loop",
        "_node",
        "client_name",
        "client_version",
        "context",
        "data",
        "end",
        "headers",
        "kind",
        "meta",
        "protocol",
        "remote_addr",
        "transport",
    )

    def __init__(
        self,
        node: Node,
        end: ConnEnd,
        *,
        kind: str,
        transport: str,
        request: Request | None = None,
        protocol: str = "json",
    ) -> None:
        self._node = node
        self.end = end
        self._loop = asyncio.get_running_loop()
        self._final: list[str] | None = None
        self._cookies: dict[str, str] | None = None
        self.kind = kind
        self.transport = transport
        self.protocol = protocol
        # What a client-protocol connect command carried besides its token.
        self.data: Any = None
        self.client_name = ""
        self.client_version = ""
        # What an ``on_connect`` hook attached to the connection (a dict's ``"meta"``);
        # the HTTP proxies send it with every later request (Centrifugo's connect meta).
        self.meta: Any = None
        self.headers: dict[str, str] = dict(request.headers) if request is not None else {}
        self.remote_addr = request.remote_addr if request is not None else ""
        self.context: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Conn {self.kind} {self.id} user={self.user!r}>"

    @property
    def id(self) -> str:
        return self.end.id

    @property
    def user(self) -> str:
        return self.end.user

    @user.setter
    def user(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("conn.user must be a string")
        self.end.user = value

    @property
    def closed(self) -> bool:
        return self._final is not None or self.end.closed

    @property
    def channels(self) -> list[str]:
        """The channels the connection is subscribed to (at its end: those it had)."""
        if self._final is not None:
            return list(self._final)
        return self.end.hook_channels()

    @property
    def cookies(self) -> dict[str, str]:
        """The request's cookies by name (parsed once, on first use)."""
        if self._cookies is None:
            jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
            # A malformed Cookie header: no cookies rather than an error.
            with contextlib.suppress(http.cookies.CookieError):
                jar.load(self.headers.get("cookie", ""))
            self._cookies = {name: morsel.value for name, morsel in jar.items()}
        return self._cookies

    def ended(self, channels: list[str]) -> None:
        """The connection closed: ``channels`` are what it had (for the last hooks)."""
        if self._final is None:
            self._final = channels

    # what hooks do
    def send(self, data: Any) -> None:
        """Send ``data`` (JSON-serialisable, or bytes) to this connection alone.
        ``NoSuchConnection`` when it has closed."""
        if self.closed:
            raise NoSuchConnection(f"connection {self.id} has closed")
        payload, is_json = encode_data(data)
        self._soon(self._send, payload, is_json)

    def broadcast_channel(self, data: Any, channel: str | None = None) -> None:
        """Publish ``data`` to ``channel`` (default: each of the connection's channels) for
        every subscriber but this connection."""
        payload, is_json = encode_data(data)
        for name in self._targets(channel):
            self._soon(self._publish, name, payload, is_json, self.id)

    def send_and_broadcast_channel(self, data: Any, channel: str | None = None) -> None:
        """Publish ``data`` to ``channel`` (default: each of the connection's channels) for
        every subscriber, this connection too: a channel it is not subscribed to reaches it
        as a message (``send``)."""
        payload, is_json = encode_data(data)
        for name in self._targets(channel):
            if name in self.channels or self.closed:
                self._soon(self._publish, name, payload, is_json, "")
            else:
                self._soon(self._send, payload, is_json)
                self._soon(self._publish, name, payload, is_json, self.id)

    def disconnect(self, code: int = 3503, reason: str = "force disconnect") -> None:
        """Close the connection with ``code`` (3000-4999; 4000-4499: the client may
        reconnect) and ``reason``."""
        if isinstance(code, bool) or not isinstance(code, int) or not 3000 <= code <= 4999:
            raise ValueError(f"disconnect code {code!r}: use 3000-4999")
        self._soon(self._close, code, str(reason))

    # on the loop
    def _targets(self, channel: str | None) -> list[str]:
        names = [channel] if channel is not None else self.channels
        for name in names:
            validate_channel(name)  # raises InvalidChannel in the hook, where it is useful
        return names

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _send(self, data: bytes, is_json: bool) -> None:
        if not self.end.closed:
            self.end.send_message(data, is_json)

    def _close(self, code: int, reason: str) -> None:
        if not self.end.closed:
            self.end.close_with(code, reason)

    def _publish(self, channel: str, data: bytes, is_json: bool, exclude: str) -> None:
        node = self._node
        try:
            done = node.publish_nowait(channel, data, is_json=is_json, exclude_client=exclude)
        except (BrokerError, InvalidChannel) as exc:
            log.warning("hook publish to %s failed: %s", channel, exc)
            return
        if done is None:
            node.spawn(self._apublish(channel, data, is_json, exclude))
        elif isinstance(done, Later):
            done.when_settled(functools.partial(_log_failed, channel))

    async def _apublish(self, channel: str, data: bytes, is_json: bool, exclude: str) -> None:
        try:
            await self._node.publish(channel, data, is_json=is_json, exclude_client=exclude)
        except BrokerError as exc:
            log.warning("hook publish to %s failed: %s", channel, exc)


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


def _log_failed(channel: str, _: object, error: BaseException | None) -> None:
    if error is not None:
        log.warning("hook publish to %s failed: %s", channel, error)
