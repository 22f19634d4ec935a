"""Static files the hub serves from ``static/``: ``/tidings.js``, the browser client."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from tidings.exceptions import HttpError
from tidings.protocol.http import Request

from .decisions import Response

if TYPE_CHECKING:
    from tidings.app import App

__all__ = ["asset", "tidings_js"]


@cache
def asset(name: str) -> tuple[bytes, str]:
    """The bytes of ``static/<name>`` and their entity tag (read once per process)."""
    body = resources.files("tidings.server").joinpath("static", name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def tidings_js(app: App, request: Request, rest: str = "") -> Response:
    """``GET /tidings.js``: the ES module of docs/javascript.md, cacheable, and readable
    from any origin (a module script is fetched with CORS; the file is public)."""
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, "method not allowed", [("Allow", "GET, HEAD")])
    body, etag = asset("tidings.js")
    headers = [
        ("Content-Type", "text/javascript; charset=utf-8"),
        # Revalidated after an hour: the URL has no version, an upgrade must reach pages.
        ("Cache-Control", "public, max-age=3600"),
        ("ETag", etag),
        ("Access-Control-Allow-Origin", "*"),
        ("X-Content-Type-Options", "nosniff"),
    ]
    if etag in (tag.strip() for tag in request.header("if-none-match").split(",")):
        return 304, b"", headers
    return 200, body, headers
