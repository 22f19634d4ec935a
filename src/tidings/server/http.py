"""The HTTP/1.1 side of a connection: requests, keep-alive, and the hand-over to streaming.

Every accepted socket starts here. Each request goes to its endpoint through the route
table (``routes.py``), which answers with a decision; this object carries it out. A stream
decision ends this object's life: the transport is handed to a small streaming protocol
(``sessions.py``, ``centrifuge*.py``) and the HTTP parser is dropped. Long-polls and
request/response endpoints stay here and keep the connection alive.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, cast

from tidings.core.tick import Later
from tidings.exceptions import HttpError
from tidings.protocol.http import Request, RequestParser, error_body, simple_response

from . import routes
from .decisions import LongPollStart, Response, StreamStart
from .longpoll import LongPoll
from .outbox import Outbox

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "BATCH",
    "MAX_ANSWERS",
    "MAX_BACKLOG",
    "MAX_QUEUED",
    "PARSE_STEP",
    "HttpConnection",
]

log = logging.getLogger("tidings.server")


# Parsed requests waiting for their turn are bounded, and so are the bytes read ahead of
# them: a parsed request costs far more memory than its bytes, so a burst of pipelined
# requests stays bytes until its turn comes.
MAX_QUEUED = 16
PARSE_STEP = 4096
MAX_BACKLOG = 65536
BATCH = 8  # requests of one connection answered in one loop iteration
# Pipelined requests to endpoints that only answer (``routes.CONCURRENT``: publish, the
# server API) are awaited together, up to this many per connection, and answered in order.
MAX_ANSWERS = 16


class _Answer:
    """A response due in its request's turn: ``response`` once its endpoint is done."""

    __slots__ = ("head", "response", "task")

    def __init__(self, head: bool, response: Response | None = None) -> None:
        self.head = head
        self.response = response
        self.task: asyncio.Task[None] | None = None


class HttpConnection(asyncio.Protocol):
    """Parses requests and answers them in order: pipelined publishes and server API calls
    are awaited together (``MAX_ANSWERS``), anything else waits its turn."""

    __slots__ = (
        "address",
        "answers",
        "backlog",
        "busy",
        "closed",
        "ctx",
        "deadline",
        "draining",
        "head",
        "lp",
        "parser",
        "processing",
        "started",
        "task",
        "timer",
        "transport",
        "writing",
    )

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        config = ctx.config
        self.parser = RequestParser(
            max_header_bytes=config.max_header_bytes, max_body=config.max_body_bytes
        )
        self.transport: asyncio.Transport | None = None
        self.address = ""  # the peer's IP address
        self.busy = False  # a request is being answered; later ones wait in the parser
        self.processing = False
        self.closed = False
        self.draining = False
        self.head = False  # answering a HEAD request: headers only (RFC 9110 §9.3.2)
        self.lp: LongPoll | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None  # loop time the current phase must end by
        # When the first byte of the request being received came: its deadline runs from
        # there, whatever trickles in after it (a slowloris gets its 408 in time).
        self.started: float | None = None
        self.writing = True  # False while the transport asks us to stop writing
        self.backlog: bytes | None = None  # bytes read and not yet given to the parser
        # Responses of pipelined requests still to be written, in request order.
        self.answers: deque[_Answer] = deque()

    @property
    def reading(self) -> bool:
        """Whether the socket is being read (not paused by backpressure)."""
        return self.transport is not None and self.transport.is_reading()

    @property
    def kind(self) -> str:
        return "lp" if self.lp is not None else "http"

    @property
    def remote(self) -> str:
        return self.where()

    # Request/response connections aren't logged or counted as disconnects (app.forget).
    @property
    def close_reason(self) -> str:
        return ""

    @property
    def close_code(self) -> int:
        return 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports don't subclass asyncio.Transport but implement it.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.peer()
        address = peer[0] if isinstance(peer, tuple) and peer else None
        self.address = address or ""
        refused = self.ctx.app.admit(self, address)
        if refused == "limit":
            log.warning("connection limit reached, refusing %s", self.where())
            self.send_error(503, "too many connections", close=True)
            return
        if refused is not None:
            self.send_error(429, "too many connections from this address", close=True)
            return
        # A new connection must send its request in time, like one that sent a byte of it.
        self.started = self.ctx.loop.time()
        self._arm_at(self.started + self.ctx.config.request_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.backlog = self.backlog + data if self.backlog else data
        self._parse()
        if self.parser.expect_continue:
            self.parser.expect_continue = False
            # The client waits for this before sending its body (curl does past 1 KiB);
            # not while an earlier pipelined response is still to be written.
            if (
                not self.busy
                and not self.answers
                and not self.parser.requests
                and self.transport is not None
            ):
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.process()
        self._watch()

    def _parse(self) -> None:
        """Give the parser what was read, while few requests wait; hold the rest as bytes
        and stop reading while too many of them wait."""
        parser = self.parser
        while (
            self.backlog
            and len(parser.requests) < MAX_QUEUED
            and parser.upgrade_data is None
            and parser.error is None
        ):
            piece, rest = self.backlog[:PARSE_STEP], self.backlog[PARSE_STEP:]
            self.backlog = rest or None
            parser.feed(piece)
        if parser.error is not None:
            self.backlog = None  # nothing after a refused request is read
        if self.backlog and len(self.backlog) > MAX_BACKLOG:
            self._hold()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.lp is not None:
            self.lp.close()
        if self.task is not None:
            self.task.cancel()
        # Answers still awaited run to their end (a publish sent to the broker happens or
        # fails there, whoever waits for it) and are dropped: at most MAX_ANSWERS.
        self.ctx.app.forget(self)

    # Backpressure: every byte held for this connection is bounded. While its answers go
    # unread (the transport's buffer is over its high-water mark) or while it waits on a
    # request (an endpoint or a long-poll) with the next one already queued, the socket is
    # not read: pipelined requests pile up in the client's socket, not in our memory.
    def pause_writing(self) -> None:
        self.writing = False
        self._hold()

    def resume_writing(self) -> None:
        self.writing = True
        self._release()
        self.process()
        self._watch()

    def _hold(self) -> None:
        if self.reading and not self.closed:
            assert self.transport is not None
            self.transport.pause_reading()

    def _release(self) -> None:
        backlogged = self.backlog is not None and len(self.backlog) > MAX_BACKLOG
        if (
            not self.reading
            and self.writing
            and not self.busy
            and not self.closed
            and not backlogged
        ):
            assert self.transport is not None  # it reads unless there is one
            self.transport.resume_reading()

    # Connection (tidings.app)
    def ping(self) -> None:
        """Plain HTTP has no heartbeat."""

    def shutdown(self, reason: str) -> None:
        """Server shutdown: answer a waiting long-poll, close when idle."""
        self.draining = True
        if self.lp is not None:
            self.lp.respond()
        elif not self.busy and not self.answers:
            self.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # request dispatch
    def process(self) -> None:
        # Answering a request calls process() again; the loop already running takes the
        # next one, so a burst of pipelined requests doesn't deepen the stack.
        if self.processing:
            return
        self.processing = True
        try:
            queue = self.parser.requests
            handled = 0
            stalled = False
            while queue and not self.busy and not self.closed and self.writing:
                if self.answers and (
                    len(self.answers) >= MAX_ANSWERS or not self._concurrent(queue[0])
                ):
                    stalled = True  # goes on when the answers before it are written
                    break
                if handled == BATCH:
                    # Fairness: the rest waits a loop iteration, so that one connection's
                    # flood of pipelined requests doesn't make every other client wait.
                    self._hold()
                    self.ctx.loop.call_soon(self._go_on)
                    return
                self.handle(queue.popleft())
                handled += 1
                if self.backlog and not self.closed:
                    self._parse()
            # A refused request is answered after the complete ones before it, then the
            # connection closes (RFC 9112 §9.3.2: responses in request order).
            error = self.parser.error
            if (
                error is not None
                and not queue
                and not self.busy
                and not self.answers
                and not self.closed
            ):
                log.info("bad request from %s: %s %s", self.where(), error.status, error.reason)
                self.head = False  # the error has a body, whatever the request before was
                self.send_error(error.status, error.reason, close=True)
            if (self.busy or stalled) and (queue or self.backlog):
                self._hold()
            elif not self.busy:
                self._release()
        finally:
            self.processing = False
        # Publishes this read queued for a batch commit are committed now, and answered
        # (core/tick.py); inside a commit's answers this does nothing.
        self.ctx.tick.flush()

    def _go_on(self) -> None:
        if not self.closed:
            self._release()
            self.process()
            self._watch()

    def handle(self, request: Request) -> None:
        self.deadline = None  # nothing times out while a request is answered
        self.started = None
        if not request.keep_alive:
            self.draining = True
        self.head = request.method == "HEAD"
        request.remote_addr = self.address
        app = self.ctx.app
        try:
            if request.method == "OPTIONS":
                self.respond(*routes.preflight(app, request))
                return
            # The path only: a query may carry a token.
            log.debug("%s %s from %s", request.method, request.path, self.where())
            endpoint, rest = routes.find(request.path)
            decision = endpoint(app, request, rest)
        except HttpError as exc:
            self.refused(request, exc)
            return
        except Exception:
            log.exception("%s %s from %s failed", request.method, request.path, self.where())
            self.send_error(500, "internal error")
            return
        if isinstance(decision, tuple | StreamStart | LongPollStart):
            self.carry_out(decision, request)
        elif isinstance(decision, Later):
            # Settled when the broker's batch commits: at the end of this read (process()
            # flushes the loop's Tick), without a task.
            answer = _Answer(self.head)
            self.answers.append(answer)
            decision.when_settled(partial(self._settled, answer, request))
        elif routes.concurrent(endpoint, request):
            answer = _Answer(self.head)
            self.answers.append(answer)
            answer.task = self.ctx.loop.create_task(self._answer(answer, decision, request))
        else:
            self.busy = True
            self.task = self.ctx.loop.create_task(self._wait(decision, request))

    @staticmethod
    def _concurrent(request: Request) -> bool:
        """Whether the queued ``request`` may go ahead while answers are awaited."""
        try:
            endpoint, _ = routes.find(request.path)
        except HttpError:
            return False
        return routes.concurrent(endpoint, request)

    async def _answer(self, answer: _Answer, outcome: Awaitable[object], request: Request) -> None:
        try:
            result = await outcome
        except Exception as exc:
            self._settled(answer, request, None, exc)
        else:
            self._settled(answer, request, result, None)

    def _settled(
        self, answer: _Answer, request: Request, result: object, error: BaseException | None
    ) -> None:
        """Fill ``answer`` with what a concurrent endpoint came to, and write what is due."""
        if isinstance(error, HttpError):
            self._log_refused(request, error)
            answer.response = (
                error.status,
                error_body(error.reason, error.code),
                error.headers or [],
            )
        elif error is not None:
            log.error(
                "%s %s from %s failed",
                request.method,
                request.path,
                self.where(),
                exc_info=error,
            )
            answer.response = (500, error_body("internal error"), [])
        else:
            assert isinstance(result, tuple)  # CONCURRENT endpoints only answer
            answer.response = cast(Response, result)
        answer.task = None
        if not self.closed:
            self._flush_answers()

    def _flush_answers(self) -> None:
        """Write the answers that are due, in request order, then go on reading."""
        answers = self.answers
        while answers and answers[0].response is not None and not self.closed:
            answer = answers.popleft()
            assert answer.response is not None
            self.head = answer.head
            self.respond(*answer.response, turn=True)

    def carry_out(self, decision: Response | StreamStart | LongPollStart, request: Request) -> None:
        if isinstance(decision, tuple):
            self.respond(*decision)
        elif isinstance(decision, StreamStart):
            self.start_stream(decision, request)
        else:
            self.longpoll(decision)

    def refused(self, request: Request, exc: HttpError) -> None:
        """Answer an error status, logged with what was asked and by whom."""
        self._log_refused(request, exc)
        self.send_error(exc.status, exc.reason, headers=exc.headers, code=exc.code)

    def _log_refused(self, request: Request, exc: HttpError) -> None:
        log.info(
            "%s %s from %s -> %s %s",
            request.method,
            request.path,
            self.where(),
            exc.status,
            exc.reason,
        )

    async def _wait(
        self, outcome: Awaitable[Response | StreamStart | LongPollStart], request: Request
    ) -> None:
        """An endpoint that has to wait (a remote broker, the hooks of a connection that
        opens): answer, or start the stream, when it is done."""
        try:
            result = await outcome
        except HttpError as exc:
            self.task = None
            self.refused(request, exc)
        except Exception:
            log.exception("%s %s from %s failed", request.method, request.path, self.where())
            self.task = None
            self.send_error(500, "internal error")
        else:
            self.task = None
            if self.closed:
                return
            if not isinstance(result, tuple):
                self.busy = False
            self.carry_out(result, request)

    # responses
    def respond(
        self, status: int, body: bytes, headers: list[tuple[str, str]], *, turn: bool = False
    ) -> None:
        """Write a response; ``turn``: it is the first of ``answers``, just taken."""
        if self.closed or self.transport is None:
            return
        if self.answers and not turn:
            # Earlier pipelined requests are still awaited: this answer waits its turn.
            self.answers.append(_Answer(self.head, (status, body, headers)))
            return
        ctype = "application/json"
        extra = []
        for name, value in headers:
            if name == "Content-Type":
                ctype = value
            else:
                extra.append((name, value))
        # Draining (shutdown) closes after the last answer still due, not before it.
        keep = not self.draining or bool(self.answers)
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
        self._release()
        self.process()
        self._watch()

    def send_error(
        self,
        status: int,
        reason: str,
        *,
        close: bool = False,
        headers: list[tuple[str, str]] | None = None,
        code: int | None = None,
    ) -> None:
        if close:
            self.draining = True
        self.respond(status, error_body(reason, code), headers or [])

    def close(self) -> None:
        """Close after what was written. When the client may still be sending (a refused
        or timed-out request), closing a socket with unread input resets it, which can
        destroy the answer before the client reads it: then half-close first and discard
        what comes until its EOF, for at most ``shutdown_timeout`` (RFC 9112 §9.6)."""
        unread = self.parser.pending() or bool(self.backlog) or self.parser.error is not None
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not unread or not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the client is gone already
            transport.abort()
            return
        if not transport.is_reading():
            transport.resume_reading()
        self.ctx.loop.call_later(self.ctx.config.shutdown_timeout, transport.abort)

    def _watch(self) -> None:
        """Set the deadline of the phase the connection is in: a request under way must be
        complete ``request_timeout`` after its first byte; an idle keep-alive connection is
        closed after ``keepalive_timeout``; nothing runs out while a request is answered."""
        if self.busy or self.answers or self.closed:
            return
        now = self.ctx.loop.time()
        if self.parser.pending() or self.parser.requests or self.backlog:
            if self.started is None:
                self.started = now
                self._arm_at(now + self.ctx.config.request_timeout)
        elif self.started is None and self.deadline is None:
            self._arm_at(now + self.ctx.config.keepalive_timeout)

    def _arm_at(self, when: float) -> None:
        # One timer at a time, moved only when the deadline comes sooner: a timer per
        # request would leave a cancelled handle in the loop per request until it is due.
        self.deadline = when
        timer = self.timer
        if timer is not None:
            if timer.when() <= when:
                return  # it fires first and finds the deadline later: it waits on then
            timer.cancel()
        self.timer = self.ctx.loop.call_at(when, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.busy or self.answers or self.closed:
            return
        if deadline > self.ctx.loop.time():
            self.timer = self.ctx.loop.call_at(deadline, self._timed_out)
            return
        # Idle keep-alive connections close quietly; a half-sent request gets 408.
        if self.parser.pending() or self.backlog:
            self.send_error(408, "request timeout", close=True)
        else:
            self.close()

    def peer(self) -> object:
        return self.transport.get_extra_info("peername") if self.transport else None

    def where(self) -> str:
        """The peer as logs show it: ``host:port``."""
        peer = self.peer()
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return self.address or "an unknown peer"

    # streams
    def start_stream(self, start: StreamStart, request: Request) -> None:
        """Write the stream's head and hand the transport to its connection object; this
        HTTP connection object is done (its parser and timers go with it)."""
        transport = self.transport
        assert transport is not None
        transport.write(start.head)
        conn: Outbox = start.make(self.ctx, transport)
        log.debug("%s %s from %s: %s stream", request.method, request.path, self.where(), conn.kind)
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport.set_protocol(conn)
        self.ctx.app.replace(self, conn)
        conn.opened((self.parser.upgrade_data or b"") + (self.backlog or b""))

    def longpoll(self, start: LongPollStart) -> None:
        self.busy = True
        self.lp = LongPoll(self, start.channels, start.raw, start.headers, start.session)
        timeout = self.ctx.config.longpoll_timeout
        if self.draining and self.ctx.app.stopping:
            timeout = 0
        self.task = self.ctx.loop.create_task(self.lp.start(start.resume, start.last, timeout))

    def finish_longpoll(self, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.lp = None
        self.task = None
        self.respond(200, body, headers)
