"""The HTTP/1.1 side of a connection: requests, keep-alive, and the hand-over to streaming.

Every accepted socket starts here. Subscribe requests end this object's life: the transport
is handed to a small streaming protocol (``sessions.py``) and the HTTP parser is dropped.
Long-polls and request/response endpoints stay here and keep the connection alive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson

from tidings.core.node import Resume
from tidings.exceptions import HttpError
from tidings.protocol.http import Request, RequestParser, chunk, response_head, simple_response
from tidings.protocol.sse import sse_comment, sse_retry
from tidings.protocol.websocket import accept_response

from . import centrifuge_http, centrifuge_uni, handlers
from .centrifuge import ClientWebSocket, accept_client_websocket
from .formats import SSE_FORMATS, STREAM_FORMATS, WS_FORMATS, TemplateFormat
from .longpoll import LongPoll
from .request import cors_headers, origin_allowed, parse_subscribe, websocket_key
from .sessions import Session, SseSession, StreamSession, WsSession

if TYPE_CHECKING:
    from .server import Server

__all__ = ["HttpConnection"]

log = logging.getLogger("tidings.server")

SUBSCRIBE = ("ws", "sse", "stream", "lp")
CLIENT_STREAMS = {
    "/connection/http_stream",
    "/connection/sse",
    "/connection/uni_sse",
    "/connection/uni_http_stream",
}
NO_BUFFERING = [
    ("Cache-Control", "no-cache, no-store, no-transform"),
    ("X-Accel-Buffering", "no"),  # nginx: don't buffer this response
]


T = TypeVar("T")


async def _resume(coro: Coroutine[Any, Any, T], waiting: Any) -> T:
    """Drive ``coro``, started outside a task and suspended on ``waiting`` (a future, or
    None for a bare yield), to its end, as the task running it would have."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                # ``coro`` marked the future as awaited when it yielded it; a task would
                # have cleared the mark on receiving it. Clear it here, or awaiting the
                # future again fails with "await wasn't used with future".
                waiting._asyncio_future_blocking = False
                await waiting
        except asyncio.CancelledError as exc:
            if not (isinstance(waiting, asyncio.Future) and waiting.cancelled()):
                # This task was cancelled, not the future: deliver that to ``coro``.
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return cast(T, stop.value)
                continue
        except Exception:  # noqa: S110 - ``coro`` takes the outcome from ``waiting`` itself
            pass
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            return cast(T, stop.value)


async def _reraise(exc: Exception) -> handlers.Response:
    """Hands an exception raised by a handler's first step to ``_run``'s handling."""
    raise exc


class HttpConnection(asyncio.Protocol):
    """Parses requests and answers them one at a time (pipelined ones wait their turn)."""

    __slots__ = (
        "busy",
        "closed",
        "draining",
        "head",
        "lp",
        "parser",
        "processing",
        "server",
        "task",
        "timer",
        "transport",
    )

    kind = "http"

    def __init__(self, server: Server) -> None:
        self.server = server
        config = server.config
        self.parser = RequestParser(
            max_header_bytes=config.max_header_bytes, max_body=config.max_body_bytes
        )
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.processing = False
        self.closed = False
        self.draining = False
        self.head = False  # answering a HEAD request: headers only (RFC 9110 §9.3.2)
        self.lp: LongPoll | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports don't subclass asyncio.Transport but implement it.
        self.transport = cast(asyncio.Transport, transport)
        if not self.server.admit(self):
            log.warning("connection limit reached, refusing %s", self.peer())
            self.send_error(503, "too many connections", close=True)
            return
        self._arm(self.server.config.request_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.parser.feed(data)
        if self.parser.expect_continue:
            self.parser.expect_continue = False
            # The client waits for this before sending its body (curl does past 1 KiB);
            # not while an earlier pipelined response is still to be written.
            if not self.busy and not self.parser.requests and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not self.busy:
            self._arm(self.server.config.request_timeout)
        self.process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.lp is not None:
            self.lp.close()
        if self.task is not None:
            self.task.cancel()
        self.server.forget(self)

    # request dispatch
    def process(self) -> None:
        # Answering a request calls process() again; the loop already running takes the
        # next one, so a burst of pipelined requests doesn't deepen the stack.
        if self.processing:
            return
        self.processing = True
        try:
            queue = self.parser.requests
            while queue and not self.busy and not self.closed:
                self.handle(queue.popleft())
            # A refused request is answered after the complete ones before it, then the
            # connection closes (RFC 9112 §9.3.2: responses in request order).
            error = self.parser.error
            if error is not None and not queue and not self.busy and not self.closed:
                log.info("bad request from %s: %s %s", self.peer(), error.status, error.reason)
                self.head = False  # the error has a body, whatever the request before was
                self.send_error(error.status, error.reason, close=True)
        finally:
            self.processing = False

    def handle(self, request: Request) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not request.keep_alive:
            self.draining = True
        self.head = request.method == "HEAD"
        path = request.path
        head, _, rest = path[1:].partition("/")
        try:
            if request.method == "OPTIONS":
                self.preflight(request)
            elif head in SUBSCRIBE and rest:
                self.subscribe(head, rest, request)
            elif head == "api" and rest:
                self.run(handlers.server_api(self.server, request, rest))
            elif path == "/connection/websocket":
                self.client_websocket(request)
            elif path in CLIENT_STREAMS:
                self.client_stream(path.rpartition("/")[2], request)
            elif path == "/connection/uni_websocket":
                self.client_websocket(request, uni=True)
            elif path == "/emulation":
                self.check_origin(request)
                cors = cors_headers(request, self.server.config.allowed_origins)
                status, body, headers = centrifuge_http.emulation(self.server, request)
                self.respond(status, body, [*headers, *cors])
            elif head == "pub" and rest:
                self.run(handlers.publish_endpoint(self.server, request, rest))
            elif path == "/stats":
                self.run(handlers.stats(self.server, request))
            elif path == "/health":
                self.respond(*handlers.health(self.server, request))
            elif path == "/" and self.server.config.demo and request.method == "GET":
                self.respond(*handlers.demo_page(self.server, request))
            else:
                raise HttpError(404, "not found")
        except HttpError as exc:
            log.info("%s %s -> %s %s", request.method, path, exc.status, exc.reason)
            self.send_error(exc.status, exc.reason, headers=exc.headers)

    def run(self, handler: Coroutine[Any, Any, handlers.Response]) -> None:
        """Start ``handler`` at once, not in a new task: one that completes without
        waiting (a publish to the memory broker) is answered within this call, so the
        publishes of pipelined or concurrent requests are fanned out in the same loop
        iteration and reach each subscriber in one coalesced write. A handler that
        waits goes on in a task."""
        self.busy = True
        try:
            waiting = handler.send(None)
        except StopIteration as stop:
            self.respond(*stop.value)
        except Exception as exc:
            self.task = self.server.loop.create_task(self._run(_reraise(exc)))
        else:
            self.task = self.server.loop.create_task(self._run(_resume(handler, waiting)))

    async def _run(self, handler: Coroutine[Any, Any, handlers.Response]) -> None:
        try:
            result = await handler
        except HttpError as exc:
            log.info("request -> %s %s", exc.status, exc.reason)
            self.send_error(exc.status, exc.reason, headers=exc.headers)
        except Exception:
            log.exception("request handler failed")
            self.send_error(500, "internal error")
        else:
            self.respond(*result)
        finally:
            self.task = None

    # responses
    def respond(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        if self.closed or self.transport is None:
            return
        ctype = "application/json"
        extra = []
        for name, value in headers:
            if name == "Content-Type":
                ctype = value
            else:
                extra.append((name, value))
        keep = not self.draining
        response = simple_response(status, body, content_type=ctype, headers=extra, keep_alive=keep)
        if self.head and body:
            response = response[: -len(body)]  # same Content-Length, no content
        self.transport.write(response)
        self.busy = False
        if not keep:
            self.close()
            return
        if not self.parser.requests and self.parser.upgrade_data is not None:
            self.parser.continue_http()  # Upgrade answered without switching (RFC 9110 §7.8)
        self._arm(self.server.config.keepalive_timeout)
        self.process()

    def send_error(
        self,
        status: int,
        reason: str,
        *,
        close: bool = False,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if close:
            self.draining = True
        self.respond(status, orjson.dumps({"error": reason}), headers or [])

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()

    def shutdown(self) -> None:
        """Server shutdown: answer a waiting long-poll, close when idle."""
        self.draining = True
        if self.lp is not None:
            self.lp.respond()
        elif not self.busy:
            self.close()

    def _arm(self, timeout: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        if self.busy or self.closed:
            return
        # Idle keep-alive connections close quietly; a half-sent request gets 408.
        if self.parser.pending():
            self.send_error(408, "request timeout", close=True)
        else:
            self.close()

    def peer(self) -> object:
        return self.transport.get_extra_info("peername") if self.transport else None

    # subscribe endpoints
    def subscribe(self, transport_name: str, rest: str, request: Request) -> None:
        config = self.server.config
        if request.method != "GET":
            raise HttpError(405, "method not allowed", [("Allow", "GET, OPTIONS")])
        if not origin_allowed(request, config.allowed_origins):
            raise HttpError(403, "origin not allowed")
        sub = parse_subscribe(
            request, rest, config.max_channels_per_connection, self.server.node.namespaces
        )
        cors = cors_headers(request, config.allowed_origins)
        if transport_name == "lp":
            self.longpoll(sub.channels, sub.raw, cors, sub.resume)
            return
        transport = self.transport
        assert transport is not None
        session: Session
        if transport_name == "ws":
            key = websocket_key(request)
            # An empty Sec-WebSocket-Protocol is accepted and not echoed.
            transport.write(accept_response(key))
            session = WsSession(self.server, transport, WS_FORMATS[sub.raw], sub.channels)
        elif transport_name == "sse":
            multi = len(sub.channels) > 1
            head = [("Content-Type", "text/event-stream; charset=utf-8"), *NO_BUFFERING]
            transport.write(
                response_head(200, [*head, ("Connection", "close"), *cors])
                + sse_retry(config.sse_retry_ms)
                + sse_comment("ok")
            )
            fmt = SSE_FORMATS[(sub.raw, not multi)]
            session = SseSession(self.server, transport, fmt, sub.channels, multi=multi)
        else:
            session = self._stream_session(request, sub.raw, sub.channels, cors)
        self.hand_over(session, sub.resume)

    def client_websocket(self, request: Request, *, uni: bool = False) -> None:
        """``/connection/websocket`` (bidirectional) or ``/connection/uni_websocket``."""
        if request.method != "GET":
            raise HttpError(405, "method not allowed", [("Allow", "GET")])
        self.check_origin(request)
        transport = self.transport
        assert transport is not None
        conn: ClientWebSocket
        if uni:
            conn = centrifuge_uni.open_uni_websocket(self.server, request, transport)
        else:
            conn = accept_client_websocket(self.server, request, transport)
        self.give_transport(conn)
        if self.parser.upgrade_data:
            conn.data_received(self.parser.upgrade_data)

    def check_origin(self, request: Request) -> None:
        if not origin_allowed(request, self.server.config.allowed_origins):
            raise HttpError(403, "origin not allowed")

    def client_stream(self, name: str, request: Request) -> None:
        """``/connection/http_stream`` and ``/connection/sse``: emulated client protocol."""
        self.check_origin(request)
        transport = self.transport
        assert transport is not None
        cors = cors_headers(request, self.server.config.allowed_origins)
        conn: centrifuge_http.ClientHttpStream
        if name.startswith("uni_"):
            conn = centrifuge_uni.open_uni_stream(self.server, request, transport, name, cors)
        elif name == "sse":
            conn = centrifuge_http.open_sse(self.server, request, transport, cors)
        else:
            conn = centrifuge_http.open_http_stream(self.server, request, transport, cors)
        self.give_transport(conn)

    def give_transport(self, conn: asyncio.Protocol) -> None:
        """Hand the transport to the protocol object of a streaming connection; this HTTP
        connection object is done (its parser and timers go with it)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        assert transport is not None
        transport.set_protocol(conn)
        self.server.replace(self, conn)

    def _stream_session(
        self, request: Request, raw: bool, channels: list[str], cors: list[tuple[str, str]]
    ) -> StreamSession:
        transport = self.transport
        assert transport is not None
        # HTTP/1.0 has no chunked coding (RFC 9112 §7.1): its body ends with the connection.
        chunked = request.http_minor > 0
        name = request.query.get("template")
        if name is not None:
            template = self.server.templates.get(name)
            if template is None:
                raise HttpError(400, "unknown template")
            fmt: TemplateFormat | None = self.server.template_formats[name]
            if not chunked:
                fmt = TemplateFormat(template, chunked=False)  # rare: not shared
            ctype, header = template.content_type, template.header
        else:
            fmt = None
            ctype = "text/plain; charset=utf-8" if raw else "application/x-ndjson"
            header = b""
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Connection", "close")
        head = [("Content-Type", ctype), framing, *NO_BUFFERING]
        if header and chunked:
            header = chunk(header)
        transport.write(response_head(200, [*head, *cors]) + header)
        formatter = fmt or STREAM_FORMATS[(raw, chunked)]
        return StreamSession(self.server, transport, formatter, channels)

    def hand_over(self, session: Session, resume: dict[str, Resume]) -> None:
        """Give the transport to ``session`` and start its subscriptions."""
        self.give_transport(session)
        leftover = self.parser.upgrade_data
        self.server.node.spawn(session.start(resume))
        if leftover and isinstance(session, WsSession):
            session.data_received(leftover)

    def longpoll(
        self,
        channels: list[str],
        raw: bool,
        cors: list[tuple[str, str]],
        resume: dict[str, Resume],
    ) -> None:
        self.busy = True
        self.lp = LongPoll(self, channels, raw, cors)
        timeout = self.server.config.longpoll_timeout
        if self.draining and self.server.stopping:
            timeout = 0
        self.task = self.server.loop.create_task(self.lp.start(resume, timeout))

    def finish_longpoll(self, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.lp = None
        self.task = None
        self.respond(200, body, headers)

    def preflight(self, request: Request) -> None:
        allowed = self.server.config.allowed_origins
        cors = cors_headers(request, allowed)
        if not cors:
            raise HttpError(403, "origin not allowed")
        cors += [
            ("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS"),
            ("Access-Control-Allow-Headers", "Content-Type, X-API-Key, Last-Event-ID"),
            ("Access-Control-Max-Age", "600"),
        ]
        self.respond(204, b"", cors)
