"""HTTP/1.1 requests in, responses out (RFC 9112), on top of httptools' parser.

``RequestParser.feed(bytes)`` queues complete requests. A request that must be refused
(400 malformed, 413 body too large, 431 headers too large) ends the parse: ``feed`` keeps
the complete requests before it and records the ``HttpError`` in ``error``, which the
caller answers after those requests, then closes (RFC 9112 §9.3.2: pipelined requests are
answered in order). Nothing after an error is parsed. The size limits apply to what has been
read, so a head that is both too long and malformed gets 431 or 400 depending on where the
reads end.

A request asking to switch protocols (``Upgrade``, RFC 9110 §7.8) also ends the parse: what
follows it, now and in later ``feed`` calls, is kept in ``upgrade_data`` for the protocol
that takes over. A caller that answers the request without switching calls
``continue_http`` to parse those bytes as HTTP/1.1 again.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

import httptools

from tidings.exceptions import HttpError

__all__ = [
    "Request",
    "RequestParser",
    "chunk",
    "error_body",
    "parse_query",
    "response_head",
    "simple_response",
]


def parse_query(text: str) -> dict[str, str]:
    """A request's query (latin-1 text as received); ``HttpError(400)`` for
    percent-escapes that aren't UTF-8. A repeated parameter keeps its last value."""
    try:
        return dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise HttpError(400, "Bad Request") from None


def error_body(reason: str, code: int | None = None) -> bytes:
    """The JSON body of an error status: ``{"error": reason}`` (and its ``code``)."""
    body: dict[str, object] = {"error": reason}
    if code is not None:
        body["code"] = code
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(slots=True)
class Request:
    """One parsed request. Header names are lower-case; repeated headers are joined by ``,``."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True
    upgrade: bool = False
    http_minor: int = 1
    extra: dict[str, str] = field(default_factory=dict)
    remote_addr: str = ""  # the peer's address, set by the connection that read it

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


class RequestParser:
    """Feeds bytes to httptools and queues complete requests; enforces size limits."""

    __slots__ = (
        "_began",
        "_body",
        "_body_size",
        "_head_later",
        "_header_bytes",
        "_headers",
        "_in_head",
        "_in_message",
        "_parser",
        "_repeated",
        "_upgrade",
        "_url",
        "error",
        "expect_continue",
        "max_body",
        "max_header_bytes",
        "requests",
    )

    def __init__(self, *, max_header_bytes: int = 16384, max_body: int = 65536) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body = max_body
        self.requests: deque[Request] = deque()
        # The bytes after an Upgrade request, once one has ended the parse.
        self._upgrade: bytearray | None = None
        # The refused request that ended the parse; answered after ``requests``.
        self.error: HttpError | None = None
        # Set when a request's headers ask for "100 Continue" and its body hasn't come yet;
        # the caller answers (RFC 9110 §10.1.1) and clears it.
        self.expect_continue = False
        self._parser = httptools.HttpRequestParser(self)
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._repeated: dict[str, list[str]] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._in_message = False
        self._in_head = False  # the request line and headers are not complete yet
        self._began = False  # a request began during the current feed
        self._head_later = 0  # bytes fed for the head after the feed it began in

    @property
    def upgrade_data(self) -> bytes | None:
        """Everything received after an Upgrade request; None before one."""
        return None if self._upgrade is None else bytes(self._upgrade)

    def feed(self, data: bytes) -> None:
        """Parse ``data``: complete requests go to ``requests``; a request that must be
        refused sets ``error`` and ends parsing (later input is ignored). Never raises."""
        if self.error is not None:
            return
        if self._upgrade is not None:
            self._upgrade += data
            return
        self._began = False
        try:
            self._parser.feed_data(data)
            if self._in_head and not self._began:
                # httptools keeps an incomplete header line in memory and reports it only
                # once complete, so the limit can't see it: bound what the head took in
                # later reads (twice the limit leaves room for what it doesn't count).
                self._head_later += len(data)
                if self._head_later > 2 * self.max_header_bytes:
                    self.error = HttpError(431, "Request Header Fields Too Large")
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._upgrade = bytearray(data[offset:])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self.error = cause if isinstance(cause, HttpError) else HttpError(400, "Bad Request")
        except httptools.HttpParserError:
            self.error = HttpError(400, "Bad Request")

    def continue_http(self) -> None:
        """The Upgrade request was answered without switching protocols: parse the bytes
        after it as HTTP/1.1 (RFC 9110 §7.8: the server may ignore Upgrade)."""
        if self._upgrade is None:
            return
        data, self._upgrade = bytes(self._upgrade), None
        self._parser = httptools.HttpRequestParser(self)
        self._reset()
        if data:
            self.feed(data)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()
        self._in_message = self._in_head = self._began = True

    def pending(self) -> bool:
        """True while a request has begun but is not complete."""
        return self._in_message

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key not in self._headers:
            self._headers[key] = text
        elif key in self._repeated:
            self._repeated[key].append(text)
        else:
            # Joined once, when the headers are complete: appending to the text each time
            # would copy it per repeat, quadratic in the header block.
            self._repeated[key] = [self._headers[key], text]

    def on_headers_complete(self) -> None:
        self._in_head = False
        for key, texts in self._repeated.items():
            self._headers[key] = ",".join(texts)
        # llhttp also takes "HTTP/0.9" and others; HTTP/1.1 syntax is for major version 1
        # (RFC 9112 §2.3), and this parser speaks 1.0 and 1.1 only.
        if self._parser.get_http_version() not in ("1.0", "1.1"):
            raise HttpError(400, "Bad Request")
        length = self._headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.max_body:
            raise HttpError(413, "Content Too Large")
        if self._headers.get("expect", "").lower() == "100-continue":
            self.expect_continue = self._parser.get_http_version() == "1.1"

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.max_body:
            raise HttpError(413, "Content Too Large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self.expect_continue = False  # the body is here already
        parser = self._parser
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            raise HttpError(400, "Bad Request") from None
        raw_path = (url.path or b"/").decode("latin-1")
        query_text = (url.query or b"").decode("latin-1")
        try:
            path = unquote(raw_path, errors="strict")
        except UnicodeDecodeError:
            raise HttpError(400, "Bad Request") from None
        query = parse_query(query_text)
        self.requests.append(
            Request(
                method=parser.get_method().decode(),
                target=self._url.decode("latin-1"),
                path=path,
                query=query,
                headers=self._headers,
                body=b"".join(self._body),
                keep_alive=parser.should_keep_alive(),
                upgrade=parser.should_upgrade(),
                http_minor=int(parser.get_http_version().split(".")[1]),
            )
        )

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            raise HttpError(431, "Request Header Fields Too Large")


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Status line and header block, ending with the blank line.

    Raises ``ValueError`` for a header name or value holding CR, LF or NUL (RFC 9110 §5.5:
    field values hold none of them): one would end the field and start another.
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    for name, value in headers:
        line = f"{name}: {value}"
        if "\r" in line or "\n" in line or "\0" in line:
            raise ValueError(f"CR, LF or NUL in the {name!r} header")
        lines.append(line)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def simple_response(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    headers: list[tuple[str, str]] | None = None,
    keep_alive: bool = True,
) -> bytes:
    """A complete response with ``Content-Length``."""
    head = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if headers:
        head.extend(headers)
    if not keep_alive:
        head.append(("Connection", "close"))
    return response_head(status, head) + body


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1); empty ``data`` ends the body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"
