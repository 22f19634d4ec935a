"""What a subscribe request asks for: channels, resume positions, mode; and Origin checks."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from tidings.core.channels import Namespaces, validate_channel
from tidings.core.publication import StreamPosition
from tidings.exceptions import HttpError, InvalidChannel, InvalidPosition, WebSocketError
from tidings.protocol.http import Request
from tidings.protocol.positions import parse_positions, parse_since
from tidings.protocol.websocket import check_handshake

__all__ = [
    "MAX_LAST",
    "SubscribeRequest",
    "check_origin",
    "cors_headers",
    "origin_allowed",
    "parse_channels",
    "parse_subscribe",
    "same_origin",
    "websocket_key",
]

MAX_LAST = 10000


@dataclass(slots=True)
class SubscribeRequest:
    """Channels, the positions to resume them after, ``?last=N`` for the others, whether
    payloads go without the envelope (``?format=raw``), and whether each channel's position
    is announced first (``?positions=1``)."""

    channels: list[str]
    resume: dict[str, StreamPosition]
    last: int | None
    raw: bool
    positions: bool = False


def parse_channels(text: str, limit: int, namespaces: Namespaces | None = None) -> list[str]:
    """Channels from a path segment: ``news,chat:1``. Raises ``HttpError`` (400, or 403
    for channels that need a token)."""
    names: list[str] = []
    for name in text.split(","):
        try:
            validate_channel(name)
        except InvalidChannel as exc:
            raise HttpError(400, f"bad channel name: {exc}") from None
        if (
            name.startswith("$")
            or "#" in name
            or (namespaces is not None and not namespaces.options(name).simple_subscribe)
        ):
            # Private ($) and user-limited (#) channels, and namespaces that don't open
            # themselves to the simple endpoints, need the client protocol's authentication.
            raise HttpError(403, "this channel needs a token: use /connection/websocket")
        if name not in names:
            names.append(name)
    if len(names) > limit:
        raise HttpError(400, f"too many channels: at most {limit} per connection")
    return names


def parse_subscribe(
    request: Request, rest: str, limit: int, namespaces: Namespaces | None = None
) -> SubscribeRequest:
    """Parse ``/<transport>/<channels>?...``; ``rest`` is the path after the prefix."""
    channels = parse_channels(rest, limit, namespaces)
    query = request.query
    mode = query.get("format", "envelope")
    if mode not in ("envelope", "raw"):
        raise HttpError(400, "format must be 'envelope' or 'raw'")
    resume: dict[str, StreamPosition] = {}
    try:
        # Precedence: query parameters (explicit) over headers (sent by browsers/caches).
        text = query.get("last_event_id") or request.header("last-event-id")
        text = text or request.header("if-none-match")
        if text:
            for ch, (offset, epoch) in parse_positions(text).items():
                if ch in channels:
                    resume[ch] = StreamPosition(offset, epoch)
        if "since" in query:
            for ch, (offset, epoch) in parse_since(query["since"], channels).items():
                if ch in channels:
                    resume[ch] = StreamPosition(offset, epoch)
    except InvalidPosition as exc:
        raise HttpError(400, f"bad position: {exc}") from None
    last = None
    if "last" in query:
        text = query["last"]
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_LAST:
            raise HttpError(400, f"last must be an integer from 0 to {MAX_LAST}")
        last = int(text)
    announce = query.get("positions", "0")
    if announce not in ("0", "1"):
        raise HttpError(400, "positions must be 0 or 1")
    return SubscribeRequest(channels, resume, last, mode == "raw", announce == "1")


def origin_allowed(request: Request, allowed: list[str]) -> bool:
    """A request with no Origin (not from a browser) passes; a browser's must be listed in
    ``allowed`` (``*`` for any) or, with an empty list, be the same origin as Host."""
    origin = request.header("origin")
    if not origin:
        return True
    if "*" in allowed or origin in allowed:
        return True
    if allowed:
        return False
    return same_origin(origin, request.header("host"))


# RFC 6454 §4: an origin's port is its scheme's default when the URI names none.
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def same_origin(origin: str, host: str) -> bool:
    """Whether the browser's ``Origin`` names the host and port of the ``Host`` header.

    A port left out means the default one: ``Host: app.example:443`` is the origin
    ``https://app.example``, and ``Host: app.example`` (a proxy may drop the port) matches
    an origin on its scheme's default port. The scheme itself is not compared: behind a
    TLS-terminating proxy the server can't tell which one the browser used."""
    try:
        seen = urlsplit(origin)
        want = urlsplit("//" + host)
        default = _DEFAULT_PORTS.get(seen.scheme.lower())
        origin_port = seen.port if seen.port is not None else default
        host_port = want.port if want.port is not None else default
    except ValueError:  # a port that is not a number, or out of range
        return False
    # A serialised origin is scheme://host[:port] and nothing more (RFC 6454 §6.1).
    extra = seen.path or seen.query or seen.fragment or "@" in seen.netloc or "@" in host
    if extra or not seen.hostname or not want.hostname or want.netloc != host.strip():
        return False
    return seen.hostname == want.hostname and origin_port == host_port


def cors_headers(request: Request, allowed: list[str]) -> list[tuple[str, str]]:
    """CORS headers for an allowed cross-origin request (none for same-origin requests).
    Origins listed by name may send cookies (``withCredentials``); ``*`` lets any origin
    read the answers, but without credentials: otherwise any site could read what a
    visitor's cookies open."""
    origin = request.header("origin")
    if not origin or not allowed or not origin_allowed(request, allowed):
        return []
    headers = [
        ("Access-Control-Allow-Origin", origin),
        ("Vary", "Origin"),
        ("Access-Control-Expose-Headers", "ETag, X-Tidings-Gap"),
    ]
    if origin in allowed:
        # A page on another port of the host (a Django app beside the hub) sends its
        # session cookie only with `withCredentials`, and may read the answer only with
        # this header; never for `*`, which would hand any site a user's private streams.
        headers.append(("Access-Control-Allow-Credentials", "true"))
    return headers


def check_origin(request: Request, allowed: list[str]) -> None:
    """403 for a browser request from an Origin that is not allowed."""
    if not origin_allowed(request, allowed):
        raise HttpError(403, "origin not allowed")


def websocket_key(request: Request) -> str:
    """The ``Sec-WebSocket-Key`` of a valid opening handshake; raises ``HttpError``: 426
    with the version we speak for another protocol version (RFC 6455 §4.4), else 400."""
    try:
        return check_handshake(request)
    except WebSocketError as exc:
        if "Version" in str(exc):
            raise HttpError(426, str(exc), [("Sec-WebSocket-Version", "13")]) from None
        raise HttpError(400, str(exc)) from None
