"""``/admin``: the operator's dashboard, off (404) unless ``admin_password`` or ``admin_token``.

A login form gives a session cookie (HttpOnly, SameSite=Strict, Secure under TLS, path
``/admin``); every POST carries the session's CSRF token (``X-CSRF-Token``, or the form's
``csrf`` field), and the login form a token of its own (double submit: a cookie and the same
value in the form). Login attempts are rate-limited per client address. The page is plain
HTML/JS from ``static/admin/``; what it shows comes from JSON endpoints under
``/admin/api/`` that call the server API (``ServerApi.call``) for everything the API
already does, and read the node's own counters for the live overview.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from tidings.exceptions import HttpError
from tidings.protocol.http import Request

from .decisions import Response
from .handlers import api_params, json_response

if TYPE_CHECKING:
    from tidings.app import App

__all__ = [
    "API_METHODS",
    "LOGIN_BURST",
    "LOGIN_COOKIE",
    "LOGIN_EVERY",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "STATIC",
    "AdminState",
    "admin",
    "admin_page",
]

log = logging.getLogger("tidings.admin")

# Server API methods the dashboard may call through ``POST /admin/api/<method>``.
API_METHODS = frozenset(
    ("info", "channels", "presence", "presence_stats", "history", "publish", "disconnect")
)
# Login attempts per client address: LOGIN_BURST at once, then one every LOGIN_EVERY seconds.
LOGIN_BURST = 5
LOGIN_EVERY = 12.0
SESSION_COOKIE = "tidings_admin"
LOGIN_COOKIE = "tidings_admin_login"
STATIC = {"admin.js": "text/javascript; charset=utf-8", "admin.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


@dataclass(slots=True)
class _Session:
    csrf: str
    expires: float


class AdminState:
    """The dashboard's sessions and login buckets, for one application."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.sessions: dict[str, _Session] = {}
        self.buckets: dict[str, tuple[float, float]] = {}  # address → (tokens, when)

    def login_allowed(self, address: str) -> bool:
        """Take one login attempt from ``address``'s bucket; False when it is empty."""
        now = self.app.clock.monotonic()
        tokens, then = self.buckets.get(address, (float(LOGIN_BURST), now))
        tokens = min(float(LOGIN_BURST), tokens + (now - then) / LOGIN_EVERY)
        if tokens < 1:
            self.buckets[address] = (tokens, now)
            return False
        self.buckets[address] = (tokens - 1, now)
        if len(self.buckets) > 10000:  # memory follows recent addresses only
            full = [a for a, (t, w) in self.buckets.items() if t + (now - w) / LOGIN_EVERY >= 5]
            for a in full:
                del self.buckets[a]
        return True

    def open_session(self) -> tuple[str, _Session]:
        now = self.app.clock.monotonic()
        for sid in [s for s, v in self.sessions.items() if v.expires <= now]:
            del self.sessions[sid]
        sid = secrets.token_urlsafe(32)
        session = _Session(secrets.token_urlsafe(32), now + self.app.config.admin_session_ttl)
        self.sessions[sid] = session
        return sid, session

    def session(self, request: Request) -> _Session | None:
        sid = _cookies(request).get(SESSION_COOKIE, "")
        session = self.sessions.get(sid) if sid else None
        if session is None:
            return None
        if session.expires <= self.app.clock.monotonic():
            del self.sessions[sid]
            return None
        return session


_STATES: weakref.WeakKeyDictionary[App, AdminState] = weakref.WeakKeyDictionary()


def _state(app: App) -> AdminState:
    config = app.config
    if not (config.admin_password or config.admin_token):
        raise HttpError(404, "not found")
    state = _STATES.get(app)
    if state is None:
        state = _STATES[app] = AdminState(app)
    return state


def _cookies(request: Request) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in request.header("cookie").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in found:
            found[name] = value.strip()
    return found


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that reveals nothing of the lengths either."""
    a = hashlib.sha256(given.encode()).digest()
    b = hashlib.sha256(expected.encode()).digest()
    return bool(expected) and hmac.compare_digest(a, b)


def _cookie(app: App, name: str, value: str, max_age: int) -> tuple[str, str]:
    secure = "; Secure" if app.config.certfile else ""
    return (
        "Set-Cookie",
        f"{name}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
    )


def _page(name: str, values: dict[str, str]) -> bytes:
    text = resources.files("tidings.server").joinpath(f"static/admin/{name}").read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return text.encode()


def _html(status: int, body: bytes, headers: list[tuple[str, str]]) -> Response:
    return status, body, [("Content-Type", "text/html; charset=utf-8"), *SECURITY_HEADERS, *headers]


def _login_page(app: App, status: int = 200, message: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    body = _page("login.html", {"CSRF": token, "MESSAGE": message})
    return _html(status, body, [_cookie(app, LOGIN_COOKIE, token, 3600)])


def admin_page(app: App, request: Request, rest: str = "") -> Response:
    """``GET /admin``: the dashboard with a session, else the login form."""
    state = _state(app)
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, "method not allowed", [("Allow", "GET")])
    session = state.session(request)
    if session is None:
        return _login_page(app)
    return _html(200, _page("index.html", {"CSRF": session.csrf}), [])


def admin(app: App, request: Request, rest: str) -> Response | Awaitable[Response]:
    """``/admin/<rest>``: ``login``, ``logout``, ``static/<file>``, ``api/...``."""
    state = _state(app)
    if rest.startswith("static/"):
        return _static(request, rest[len("static/") :])
    if rest == "login":
        return _login(app, state, request)
    bearer = request.header("authorization")
    token = app.config.admin_token
    if token and bearer.lower().startswith("bearer ") and _same(bearer[7:].strip(), token):
        session = None  # a script with the token: no cookie, so no CSRF to check
    else:
        session = state.session(request)
        if session is None:
            raise HttpError(401, "not logged in")
        if request.method == "POST" and not _csrf_ok(request, session.csrf):
            log.warning("admin %s from %s: bad CSRF token", rest, request.remote_addr)
            raise HttpError(403, "missing or wrong CSRF token")
    if rest == "logout":
        if request.method != "POST":
            raise HttpError(405, "method not allowed", [("Allow", "POST")])
        sid = _cookies(request).get(SESSION_COOKIE, "")
        state.sessions.pop(sid, None)
        gone = _cookie(app, SESSION_COOKIE, "", 0)
        return 303, b"", [("Location", "/admin"), gone, *SECURITY_HEADERS]
    if rest == "api/overview":
        if request.method != "GET":
            raise HttpError(405, "method not allowed", [("Allow", "GET")])
        return _overview(app)
    if rest.startswith("api/"):
        method = rest[len("api/") :]
        if method not in API_METHODS:
            raise HttpError(404, "not found")
        params = api_params(request)
        if method in ("publish", "disconnect"):
            log.info("admin %s from %s: %s", method, request.remote_addr, _brief(params))
        return _call(app, method, params)
    raise HttpError(404, "not found")


def _csrf_ok(request: Request, expected: str) -> bool:
    given = request.header("x-csrf-token")
    if not given and request.header("content-type").startswith("application/x-www-form-urlencoded"):
        given = _form(request).get("csrf", "")
    return _same(given, expected)


def _form(request: Request) -> dict[str, str]:
    try:
        fields = parse_qs(request.body.decode(), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "bad form") from None
    return {k: v[0] for k, v in fields.items()}


def _brief(params: Any) -> str:
    if not isinstance(params, dict):
        return "?"
    return " ".join(f"{k}={str(params[k])[:80]!r}" for k in ("channel", "user") if k in params)


def _login(app: App, state: AdminState, request: Request) -> Response:
    if request.method != "POST":
        raise HttpError(405, "method not allowed", [("Allow", "POST")])
    address = request.remote_addr
    if not state.login_allowed(address):
        log.warning("admin login from %s: over the rate limit", address)
        raise HttpError(429, "too many login attempts", [("Retry-After", str(int(LOGIN_EVERY)))])
    form = _form(request)
    if not _same(form.get("csrf", ""), _cookies(request).get(LOGIN_COOKIE, "")):
        log.warning("admin login from %s: bad CSRF token", address)
        return _login_page(app, 403, "The form expired: try again.")
    password = form.get("password", "")
    config = app.config
    if not (_same(password, config.admin_password) or _same(password, config.admin_token)):
        log.warning("admin login from %s: wrong password", address)
        return _login_page(app, 401, "Wrong password.")
    sid, _ = state.open_session()
    log.info("admin login from %s", address)
    ttl = int(config.admin_session_ttl)
    headers = [
        ("Location", "/admin"),
        _cookie(app, SESSION_COOKIE, sid, ttl),
        _cookie(app, LOGIN_COOKIE, "", 0),
        *SECURITY_HEADERS,
    ]
    return 303, b"", headers


def _static(request: Request, name: str) -> Response:
    ctype = STATIC.get(name)
    if ctype is None or request.method not in ("GET", "HEAD"):
        raise HttpError(404, "not found")
    body = resources.files("tidings.server").joinpath(f"static/admin/{name}").read_bytes()
    return 200, body, [("Content-Type", ctype), ("X-Content-Type-Options", "nosniff")]


async def _overview(app: App) -> Response:
    node = app.node
    hub = node.hub
    channels = list(hub.channels())
    info = await app.api.call("info", {})
    body = {
        "time": time.time(),
        "node": node.name,
        "uptime": round(time.time() - node.started, 3),
        "connections": app.connection_counts(),
        "channels": len(channels),
        "subscriptions": sum(hub.count(ch) for ch in channels),
        "published": node.published,
        "delivered": hub.delivered,
        "bytes_out": app.bytes_out,
        "slow_disconnects": app.slow_disconnects,
        "nodes": info.get("result", {}).get("nodes", []),
    }
    return json_response(200, body, [("Cache-Control", "no-store")])


async def _call(app: App, method: str, params: Any) -> Response:
    return json_response(200, await app.api.call(method, params), [("Cache-Control", "no-store")])
