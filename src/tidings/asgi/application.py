"""``TidingsASGI``: the native server's endpoints as an ASGI 3 application.

Each request goes through the same route table and endpoints as on the native server
(``server/routes.py``): they return a decision, and this module carries it out over ASGI.
A response is sent as is; a long-poll waits here through the same ``LongPoll``; a stream
(WebSocket, SSE, chunked stream, the client protocol's transports) is the same session
object the native server hands its socket to, given an ``AsgiTransport`` instead. So the
hooks, the client protocol, recovery and the outgoing bound are the node's, not this
module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from tidings.app import App
from tidings.config import Config
from tidings.exceptions import HttpError
from tidings.protocol.http import Request, error_body, parse_query
from tidings.protocol.relay import split_head
from tidings.protocol.websocket import close_frame
from tidings.server import routes
from tidings.server.context import Context
from tidings.server.decisions import LongPollStart, Response, StreamStart
from tidings.server.longpoll import LongPoll

from .transport import AsgiTransport, Message, Send

__all__ = ["Exchange", "TidingsASGI"]

log = logging.getLogger("tidings.asgi")

Receive = Any  # ``async () -> message``
Scope = dict[str, Any]


class Exchange:
    """One ASGI request as the ``App``'s registry sees it until it becomes a stream."""

    __slots__ = ("closed", "ctx", "done", "kind", "lp", "outcome", "peer")

    def __init__(self, ctx: Context, peer: object) -> None:
        self.ctx = ctx
        self.peer = peer
        self.kind = "http"
        self.closed = False
        self.lp: LongPoll | None = None
        self.outcome: asyncio.Future[Response] = ctx.loop.create_future()

    # LongPollHost
    def send_error(self, status: int, reason: str) -> None:
        if not self.outcome.done():
            self.outcome.set_result((status, error_body(reason), []))

    def finish_longpoll(self, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.lp = None
        if not self.outcome.done():
            self.outcome.set_result((200, body, headers))

    # Connection (tidings.app)
    @property
    def remote(self) -> str:
        peer = self.peer
        if isinstance(peer, tuple | list) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return "an unknown peer"

    @property
    def close_reason(self) -> str:
        return ""  # a plain request is not logged as a connection

    @property
    def close_code(self) -> int:
        return 0

    def ping(self) -> None:
        """Plain HTTP has no heartbeat."""

    def shutdown(self, reason: str) -> None:
        if self.lp is not None:
            self.lp.respond()

    def abort(self) -> None:
        self.closed = True
        if self.lp is not None:
            self.lp.close()
        self.send_error(503, "shutting down")


class TidingsASGI:
    """Serves one ``App`` as an ASGI application.

    Run alone (``uvicorn module:asgi``) it starts and stops the ``App`` on the ASGI
    lifespan events. Mounted in a host application that owns the lifespan (Starlette's
    ``Mount``, which doesn't pass lifespan on), enter ``lifespan()`` from the host's own.
    Mounted under a prefix, the host's ``root_path`` is taken off each path.
    """

    def __init__(self, app: App | Config | None = None) -> None:
        self.app = app if isinstance(app, App) else App(app)
        self.config = self.app.config
        self._ctx: Context | None = None
        self._started = False

    @property
    def context(self) -> Context:
        if self._ctx is None:
            self._ctx = Context(self.app, asyncio.get_running_loop())
        return self._ctx

    async def start(self) -> None:
        """Start the ``App`` (its node, broker and heartbeat)."""
        if not self._started:
            self._started = True
            self.context  # noqa: B018 - bound to the loop the app runs on
            await self.app.start()

    async def aclose(self) -> None:
        """Tell every client, then stop the ``App``."""
        if self._started:
            await self.app.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, host: object = None) -> AsyncIterator[None]:
        """``start`` … ``aclose``, as a host's lifespan context (Starlette, FastAPI)."""
        await self.start()
        try:
            yield
        finally:
            await self.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.exception("tidings failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # requests
    def _request(self, scope: Scope, body: bytes) -> Request:
        path = scope.get("path", "/")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            # ASGI: ``path`` holds the mount prefix, ``root_path`` names it.
            path = path[len(root) :] or "/"
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        query_text = scope.get("query_string", b"").decode("latin-1")
        query = parse_query(query_text)  # the host decoded the path already
        version = scope.get("http_version", "1.1")
        client = scope.get("client")
        return Request(
            method=scope.get("method", "GET"),
            target=path + (f"?{query_text}" if query_text else ""),
            path=path,
            query=query,
            headers=headers,
            body=body,
            upgrade=scope["type"] == "websocket",
            http_minor=1 if version != "1.0" else 0,
            remote_addr=client[0] if client else "",
        )

    async def _body(self, receive: Receive) -> bytes:
        limit, parts, size = self.config.max_body_bytes, [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("the client went away")
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise HttpError(413, "Content Too Large")
            parts.append(part)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _decide(self, request: Request) -> Response | StreamStart | LongPollStart:
        if request.method == "OPTIONS":
            return routes.preflight(self.app, request)
        endpoint, rest = routes.find(request.path)
        decision = endpoint(self.app, request, rest)
        if isinstance(decision, tuple | StreamStart | LongPollStart):
            return decision
        result: Response | StreamStart | LongPollStart = await decision
        return result

    def _admit(self, peer: object, address: str) -> tuple[Exchange | None, Response | None]:
        exchange = Exchange(self.context, peer)
        refused = self.app.admit(exchange, address or None)
        if refused == "limit":
            log.warning("connection limit reached, refusing %s", address)
            return None, _error(503, "too many connections")
        if refused is not None:
            return None, _error(429, "too many connections from this address")
        return exchange, None

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        exchange, refusal = self._admit(client, client[0] if client else "")
        if exchange is None:
            assert refusal is not None
            await _respond(send, refusal, head=scope.get("method") == "HEAD")
            return
        streaming = False
        try:
            try:
                request = self._request(scope, await self._body(receive))
                decision = await self._decide(request)
            except HttpError as exc:
                log.info(
                    "%s %s -> %s %s", scope.get("method"), scope.get("path"), exc.status, exc.reason
                )
                await _respond(send, _error(exc.status, exc.reason, exc.headers, exc.code))
                return
            except ConnectionError:
                return
            except Exception:
                log.exception("%s %s failed", scope.get("method"), scope.get("path"))
                await _respond(send, _error(500, "internal error"))
                return
            if isinstance(decision, tuple):
                await _respond(send, decision, head=request.method == "HEAD")
            elif isinstance(decision, LongPollStart):
                await self._longpoll(exchange, decision, receive, send)
            else:
                streaming = True
                await self._stream(exchange, decision, client, receive, send, websocket=False)
        finally:
            if not streaming:
                self.app.forget(exchange)

    async def _longpoll(
        self, exchange: Exchange, start: LongPollStart, receive: Receive, send: Send
    ) -> None:
        exchange.kind = "lp"
        lp = LongPoll(exchange, start.channels, start.raw, start.headers, start.session)
        exchange.lp = lp
        timeout = 0.0 if self.app.stopping else self.config.longpoll_timeout
        task = exchange.ctx.loop.create_task(lp.start(start.resume, start.last, timeout))
        gone: asyncio.Future[None] = asyncio.ensure_future(_disconnected(receive))
        waits: list[asyncio.Future[Any]] = [exchange.outcome, gone]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if exchange.outcome.done():
            await _respond(send, exchange.outcome.result())
        else:
            lp.close()
        await task

    async def _stream(
        self,
        exchange: Exchange,
        start: StreamStart,
        peer: object,
        receive: Receive,
        send: Send,
        *,
        websocket: bool,
    ) -> None:
        transport = AsgiTransport(send, peer, websocket=websocket)
        if not websocket:
            transport.write(start.head)
        try:
            conn = start.make(exchange.ctx, transport)
        except Exception:
            log.exception("starting a %s stream failed", "websocket" if websocket else "http")
            if websocket:
                transport.write(close_frame(1011, "internal error"))
            else:
                transport.close()
            await transport.done.wait()
            self.app.forget(exchange)
            return
        transport.set_protocol(conn)
        self.app.replace(exchange, conn)
        conn.opened(b"")
        done = asyncio.ensure_future(transport.done.wait())
        try:
            while True:
                incoming = asyncio.ensure_future(receive())
                await asyncio.wait([incoming, done], return_when=asyncio.FIRST_COMPLETED)
                if not incoming.done():
                    incoming.cancel()
                    break
                message: Message = incoming.result()
                if message["type"] == "websocket.receive":
                    text = message.get("text")
                    if text is not None:
                        transport.feed_message(text.encode(), True)
                    else:
                        transport.feed_message(message.get("bytes") or b"", False)
                elif message["type"] in ("websocket.disconnect", "http.disconnect"):
                    break
        finally:
            done.cancel()
            await transport.aclose()
            conn.connection_lost(None)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        client = scope.get("client")
        exchange, refusal = self._admit(client, client[0] if client else "")
        if exchange is None:
            assert refusal is not None
            await _refuse_websocket(scope, send, refusal)
            return
        streaming = False
        try:
            try:
                request = self._request(scope, b"")
                # The host's server checked the handshake and will answer it: give the
                # endpoints the request as a client sent it.
                request.headers.setdefault("upgrade", "websocket")
                request.headers.setdefault("connection", "Upgrade")
                decision = await self._decide(request)
            except HttpError as exc:
                log.info("websocket %s -> %s %s", scope.get("path"), exc.status, exc.reason)
                await _refuse_websocket(
                    scope, send, _error(exc.status, exc.reason, exc.headers, exc.code)
                )
                return
            except Exception:
                log.exception("websocket %s failed", scope.get("path"))
                await _refuse_websocket(scope, send, _error(500, "internal error"))
                return
            if not isinstance(decision, StreamStart):
                await _refuse_websocket(scope, send, _error(400, "not a WebSocket endpoint"))
                return
            _, headers, _ = split_head(decision.head)
            chosen = next((v for n, v in headers if n.lower() == "sec-websocket-protocol"), None)
            await send({"type": "websocket.accept", "subprotocol": chosen})
            streaming = True
            await self._stream(exchange, decision, client, receive, send, websocket=True)
        finally:
            if not streaming:
                self.app.forget(exchange)


def _error(
    status: int,
    reason: str,
    headers: list[tuple[str, str]] | None = None,
    code: int | None = None,
) -> Response:
    return status, error_body(reason, code), headers or []


async def _respond(send: Send, response: Response, *, head: bool = False) -> None:
    status, body, headers = response
    out = [(b"content-length", str(len(body)).encode())]
    if not any(name == "Content-Type" for name, _ in headers):
        out.append((b"content-type", b"application/json"))
    out += [(name.lower().encode(), value.encode("latin-1")) for name, value in headers]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _refuse_websocket(scope: Scope, send: Send, response: Response) -> None:
    """An HTTP answer to the handshake where the host's server can send one (the ASGI
    ``websocket.http.response`` extension), else a close before accepting (403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        status, body, headers = response
        out = [(b"content-type", b"application/json")]
        out += [(n.lower().encode(), v.encode("latin-1")) for n, v in headers]
        await send({"type": "websocket.http.response.start", "status": status, "headers": out})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
