"""``tidings subscribe``: print messages as they come, over the chunked stream endpoint,
reconnecting and resuming from the last position when the connection goes.

Messages go to standard output, one per line (the envelope, or with ``raw`` the payload);
notices and connection news go to standard error, one line each. The stream is asked for
``?positions=1``, so every channel's position is known from the start — also of a channel
that has had no message yet — and a reconnect resumes each exactly where it was
(``?last_event_id=``); what history can no longer give is reported as a gap.
"""

from __future__ import annotations

import asyncio
import random
import socket
import sys
from typing import Any, TextIO
from urllib.parse import quote

import httpx
import orjson

from tidings.exceptions import InvalidPosition
from tidings.protocol.positions import format_positions, parse_since

__all__ = ["MAX_BACKOFF", "StreamFailed", "Subscription", "subscribe_print"]

MAX_BACKOFF = 10.0


class StreamFailed(Exception):
    """The stream can't be had; ``final``: retrying won't help (a 4xx answer)."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class Subscription:
    """The channels, where each stands, and what to print; fed one line at a time."""

    def __init__(
        self,
        channels: list[str],
        since: str | None,
        last: int | None,
        raw: bool,
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.channels = list(channels)
        self.raw = raw
        self.out = out
        self.err = err
        self.positions: dict[str, tuple[int, str]] = {}
        # The user's starting point, for channels whose position isn't known yet.
        self.since = parse_since(since, self.channels) if since else {}
        self.last = last
        self.ended = False  # every channel was deleted
        self.streams = 0  # streams the server started (answered 200)

    def params(self) -> dict[str, str]:
        params = {"positions": "1"}
        if self.positions:
            params["last_event_id"] = format_positions(self.positions)
        start = {ch: off for ch, (off, _) in self.since.items() if ch not in self.positions}
        if start:
            params["since"] = ",".join(f"{ch}:{off}" for ch, off in start.items())
        if self.last is not None:
            params["last"] = str(self.last)  # only for channels without a position
        return params

    def path(self) -> str:
        return "/stream/" + ",".join(quote(ch, safe=":@/=!~$") for ch in self.channels)

    def line(self, text: str) -> None:
        """One line of the stream."""
        try:
            item = orjson.loads(text)
        except orjson.JSONDecodeError:
            item = None
        if not isinstance(item, dict):
            self.tell(f"unexpected line from the server: {text[:200]}")
            return
        if "notice" in item:
            self.notice(item)
            return
        channel, offset, epoch = item.get("channel"), item.get("offset"), item.get("epoch")
        if isinstance(channel, str) and isinstance(offset, int) and isinstance(epoch, str):
            self.positions[channel] = (offset, epoch)
        if not self.raw:
            print(text, file=self.out, flush=True)
            return
        data = item.get("data")
        shown = data if isinstance(data, str) else orjson.dumps(data).decode()
        print(shown, file=self.out, flush=True)

    def notice(self, item: dict[str, Any]) -> None:
        kind, channel = item.get("notice"), str(item.get("channel", ""))
        if kind == "position":
            offset, epoch = item.get("offset"), item.get("epoch")
            if isinstance(offset, int) and isinstance(epoch, str):
                self.positions[channel] = (offset, epoch)
        elif kind == "gap":
            expected, resumed = item.get("expected"), item.get("resumed_from")
            reason = item.get("reason", "history")
            self.tell(
                f"gap in {channel}: messages from offset {expected} on are lost ({reason}); "
                f"going on from offset {resumed}"
            )
        elif kind == "deleted":
            self.tell(f"{channel} was deleted")
            self.channels = [ch for ch in self.channels if ch != channel]
            self.positions.pop(channel, None)
            self.ended = not self.channels
        elif kind == "shutdown":
            self.tell("the server is shutting down")
        elif kind == "slow":
            self.tell("cut off by the server as too slow a reader")
        else:
            self.tell(f"notice: {orjson.dumps(item).decode()}")

    def tell(self, text: str) -> None:
        print(f"tidings: {text}", file=self.err, flush=True)


def _keepalive() -> list[tuple[int, int, int]]:
    """TCP keep-alive, so that a server that vanished is noticed within about a minute:
    the stream itself may be silent for as long as nobody publishes."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


async def _stream(client: httpx.AsyncClient, url: str, sub: Subscription) -> None:
    """Read one connection's stream until it ends; ``StreamFailed`` when it can't be had
    or breaks."""
    target = url.rstrip("/") + sub.path()
    params = sub.params()
    try:
        async with client.stream("GET", target, params=params) as response:
            if response.status_code != 200:
                await response.aread()
                try:
                    reason = str(orjson.loads(response.content)["error"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    reason = response.reason_phrase
                final = 400 <= response.status_code < 500 and response.status_code != 429
                raise StreamFailed(f"{response.status_code} {reason}", final=final)
            sub.streams += 1
            if sub.streams > 1:
                resumed = params.get("last_event_id", "")
                sub.tell(f"reconnected{'; resuming after ' + resumed if resumed else ''}")
            async for line in response.aiter_lines():
                if line:
                    sub.line(line)
    except httpx.HTTPError as exc:
        if not isinstance(exc, httpx.TransportError) or isinstance(exc, httpx.UnsupportedProtocol):
            raise StreamFailed(str(exc), final=True) from None
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise StreamFailed(detail) from None


async def subscribe_print(
    url: str,
    channels: list[str],
    since: str | None,
    last: int | None,
    raw: bool,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    max_backoff: float = MAX_BACKOFF,
) -> int:
    """Print ``channels`` until interrupted, resuming after every lost connection.

    1 when the first connection fails or the server refuses (a 4xx); 0 when every channel
    was deleted."""
    try:
        sub = Subscription(channels, since, last, raw, out or sys.stdout, err or sys.stderr)
    except InvalidPosition as exc:
        print(f"tidings: --since: {exc}", file=err or sys.stderr)
        return 2
    transport = httpx.AsyncHTTPTransport(socket_options=_keepalive())
    timeout = httpx.Timeout(10.0, read=None)
    delay = 0.5
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        while True:
            before = sub.streams
            try:
                await _stream(client, url, sub)
                problem = "the server ended the stream"
            except StreamFailed as exc:
                if exc.final or not sub.streams:
                    where = "" if sub.streams else f"can't subscribe at {url}: "
                    sub.tell(f"{where}{exc}")
                    return 1
                problem = str(exc)
            if sub.ended:
                return 0
            if sub.streams > before:
                delay = 0.5  # it was connected: start the backoff again
            wait = delay / 2 + random.uniform(0, delay / 2)
            sub.tell(f"connection lost ({problem}); reconnecting in {wait:.1f} s")
            await asyncio.sleep(wait)
            delay = min(max_backoff, delay * 2)
