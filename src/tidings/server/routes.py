"""The route table: which endpoint answers which path, and the streaming endpoints.

Every endpoint is ``endpoint(app, request, rest) -> Decision`` (``decisions.py``): it reads
the request and the application and decides — a response, a stream to start, a long-poll
— without touching a socket. ``rest`` is the path after a prefix route's first segment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from tidings.core.hub import Formatter
from tidings.exceptions import HttpError
from tidings.protocol.http import Request, chunk, response_head
from tidings.protocol.sse import sse_retry
from tidings.protocol.websocket import accept_response

from . import (
    admin,
    assets,
    centrifuge,
    centrifuge_http,
    centrifuge_uni,
    chat,
    handlers,
    hooked,
    metrics,
)
from .decisions import Decision, LongPollStart, Response, StreamStart
from .formats import SSE_FORMATS, STREAM_FORMATS, WS_FORMATS, TemplateFormat
from .request import (
    SubscribeRequest,
    check_origin,
    cors_headers,
    parse_subscribe,
    websocket_key,
)
from .sessions import Session, SseSession, StreamSession, WsSession

if TYPE_CHECKING:
    from tidings.app import App
    from tidings.core.conn import Conn

    from .context import Context

__all__ = [
    "CONCURRENT",
    "EXACT",
    "NO_BUFFERING",
    "PREFIXES",
    "Endpoint",
    "client_stream",
    "client_websocket",
    "concurrent",
    "emulation",
    "find",
    "preflight",
    "subscribe",
    "uni_websocket",
]

Endpoint = Callable[["App", Request, str], Decision]

NO_BUFFERING = [
    ("Cache-Control", "no-cache, no-store, no-transform"),
    ("X-Accel-Buffering", "no"),  # nginx: don't buffer this response
]


def subscribe(app: App, request: Request, transport_name: str, rest: str) -> Decision:
    """``GET /ws|sse|stream|lp/<channels>``: the simple endpoints. Where hooks (or the
    message log) are configured, the connection's opening hooks run first
    (``hooked.open_simple``)."""
    config = app.config
    if request.method != "GET":
        raise HttpError(405, "method not allowed", [("Allow", "GET, OPTIONS")])
    check_origin(request, config.allowed_origins)
    sub = parse_subscribe(request, rest, config.max_channels_per_connection, app.node.namespaces)
    if transport_name == "ws":
        websocket_key(request)  # a bad handshake is refused before any hook runs
    elif transport_name == "lp":
        # A poll of a session this node holds: the session's hooks ran at its first poll.
        session = app.longpoll_sessions.find(request.query.get("session", ""), sub.channels)
        if session is not None:
            cors = cors_headers(request, config.allowed_origins)
            return LongPollStart(sub.channels, sub.raw, cors, sub.resume, sub.last, session)
    if app.node.wants_conns:
        return hooked.open_simple(
            app,
            request,
            transport_name,
            sub.channels,
            lambda conn: _simple_start(app, request, transport_name, sub, conn),
        )
    return _simple_start(app, request, transport_name, sub, None)


def _simple_start(
    app: App, request: Request, transport_name: str, sub: SubscribeRequest, conn: Conn | None
) -> StreamStart | LongPollStart:
    config = app.config
    cors = cors_headers(request, config.allowed_origins)
    channels, resume, last, raw = sub.channels, sub.resume, sub.last, sub.raw

    def starting(session: Session) -> Session:
        if conn is not None:
            session.adopt(conn)
        session.begin(resume, last, announce=sub.positions)
        return session

    if transport_name == "lp":
        session = app.longpoll_sessions.create(channels, conn)
        return LongPollStart(channels, raw, cors, resume, last, session)
    if transport_name == "ws":
        # An empty Sec-WebSocket-Protocol is accepted and not echoed.
        head = accept_response(websocket_key(request))
        return StreamStart(
            head, lambda ctx, t: starting(WsSession(ctx, t, WS_FORMATS[raw], channels))
        )
    if transport_name == "sse":
        multi = len(channels) > 1
        sse_head = [("Content-Type", "text/event-stream; charset=utf-8"), *NO_BUFFERING]
        head = response_head(200, [*sse_head, ("Connection", "close"), *cors]) + sse_retry(
            config.sse_retry_ms
        )  # the ": ok" comment follows once every channel is live (SseSession.start)
        fmt = SSE_FORMATS[(raw, not multi)]
        return StreamStart(
            head, lambda ctx, t: starting(SseSession(ctx, t, fmt, channels, multi=multi))
        )
    return _stream(app, request, raw, cors, starting, channels)


def _stream(
    app: App,
    request: Request,
    raw: bool,
    cors: list[tuple[str, str]],
    starting: Callable[[Session], Session],
    channels: list[str],
) -> StreamStart:
    # HTTP/1.0 has no chunked coding (RFC 9112 §7.1): its body ends with the connection.
    chunked = request.http_minor > 0
    name = request.query.get("template")
    if name is not None:
        template = app.templates.get(name)
        if template is None:
            raise HttpError(400, "unknown template")
        ctype, header = template.content_type, template.header
    else:
        ctype = "text/plain; charset=utf-8" if raw else "application/x-ndjson"
        header = b""
    framing = ("Transfer-Encoding", "chunked") if chunked else ("Connection", "close")
    head = [("Content-Type", ctype), framing, *NO_BUFFERING]
    if header and chunked:
        header = chunk(header)

    def make(ctx: Context, transport: asyncio.Transport) -> Session:
        fmt: Formatter
        if name is None:
            fmt = STREAM_FORMATS[(raw, chunked)]
        elif chunked:
            fmt = ctx.template_formats[name]
        else:
            fmt = TemplateFormat(app.templates[name], chunked=False)  # rare: not shared
        return starting(StreamSession(ctx, transport, fmt, channels))

    return StreamStart(response_head(200, [*head, *cors]) + header, make)


def client_websocket(app: App, request: Request, rest: str) -> Decision:
    """``/connection/websocket`` (bidirectional client protocol)."""
    if request.method != "GET":
        raise HttpError(405, "method not allowed", [("Allow", "GET")])
    check_origin(request, app.config.allowed_origins)
    return centrifuge.client_websocket(request)


def uni_websocket(app: App, request: Request, rest: str) -> Decision:
    """``/connection/uni_websocket``."""
    if request.method != "GET":
        raise HttpError(405, "method not allowed", [("Allow", "GET")])
    check_origin(request, app.config.allowed_origins)
    return centrifuge_uni.uni_websocket(request)


def client_stream(name: str) -> Endpoint:
    """``/connection/http_stream``, ``/connection/sse`` and their unidirectional kin."""

    def endpoint(app: App, request: Request, rest: str) -> Decision:
        check_origin(request, app.config.allowed_origins)
        cors = cors_headers(request, app.config.allowed_origins)
        if name.startswith("uni_"):
            return centrifuge_uni.uni_stream(request, name, cors)
        if name == "sse":
            return centrifuge_http.sse(request, cors)
        return centrifuge_http.http_stream(request, cors)

    return endpoint


def emulation(app: App, request: Request, rest: str) -> Decision:
    """``POST /emulation``, with CORS headers on its answer."""
    check_origin(request, app.config.allowed_origins)
    cors = cors_headers(request, app.config.allowed_origins)
    outcome = centrifuge_http.emulation(app, request)
    if isinstance(outcome, tuple):
        status, body, headers = outcome
        return status, body, [*headers, *cors]
    return _with_headers(outcome, cors)


async def _with_headers(outcome: Awaitable[Response], extra: list[tuple[str, str]]) -> Response:
    status, body, headers = await outcome
    return status, body, [*headers, *extra]


def preflight(app: App, request: Request) -> Response:
    """``OPTIONS`` on any path: CORS preflight for allowed origins."""
    cors = cors_headers(request, app.config.allowed_origins)
    if not cors:
        raise HttpError(403, "origin not allowed")
    cors += [
        ("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS"),
        ("Access-Control-Allow-Headers", "Content-Type, X-API-Key, Last-Event-ID, Idempotency-Key"),
        ("Access-Control-Max-Age", "600"),
    ]
    return 204, b"", cors


def _simple(name: str) -> Endpoint:
    def endpoint(app: App, request: Request, rest: str) -> Decision:
        return subscribe(app, request, name, rest)

    return endpoint


EXACT: dict[str, Endpoint] = {
    "/connection/websocket": client_websocket,
    "/connection/uni_websocket": uni_websocket,
    "/connection/http_stream": client_stream("http_stream"),
    "/connection/sse": client_stream("sse"),
    "/connection/uni_sse": client_stream("uni_sse"),
    "/connection/uni_http_stream": client_stream("uni_http_stream"),
    "/emulation": emulation,
    "/stats": handlers.stats,
    "/metrics": metrics.metrics,
    "/admin": admin.admin_page,
    "/health": handlers.health,
    "/": handlers.demo_page,
    "/tidings.js": assets.tidings_js,
    "/demo/chat": chat.chat_page,
}

# First path segment → endpoint, for ``/<segment>/<rest>`` with a non-empty rest.
PREFIXES: dict[str, Endpoint] = {
    "ws": _simple("ws"),
    "sse": _simple("sse"),
    "stream": _simple("stream"),
    "lp": _simple("lp"),
    "pub": handlers.publish_endpoint,
    "api": handlers.server_api,
    "demo": chat.chat_send,
    "admin": admin.admin,
}


def find(path: str) -> tuple[Endpoint, str]:
    """The endpoint for ``path`` and the rest of the path after its prefix; 404 if none."""
    endpoint = EXACT.get(path)
    if endpoint is not None:
        return endpoint, ""
    head, _, rest = path[1:].partition("/")
    endpoint = PREFIXES.get(head)
    if endpoint is None or not rest:
        raise HttpError(404, "not found")
    return endpoint, rest


# Endpoints that only ever answer (never stream or long-poll), so pipelined requests to
# them may be awaited together (``HttpConnection``): publishing and the server API.
CONCURRENT: frozenset[Endpoint] = frozenset({handlers.publish_endpoint, handlers.server_api})


def concurrent(endpoint: Endpoint, request: Request) -> bool:
    """Whether ``request`` to ``endpoint`` may be answered while earlier pipelined ones are
    still awaited: a keep-alive POST to an endpoint that only answers (never streams)."""
    return endpoint in CONCURRENT and request.keep_alive and request.method == "POST"
