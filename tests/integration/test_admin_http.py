"""``/admin`` over HTTP: off without a password, login with a session cookie, CSRF on every
POST, login rate limit, and the JSON endpoints backed by the server API."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from integration_helpers import http_client, subscribed, ws_connect, ws_json

from tidings.server import Server
from tidings.server.admin import LOGIN_BURST
from tidings.testing import running_server
from tidings.testing.tls import make_certificates

pytestmark = pytest.mark.usefixtures("no_server_errors")

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def admin_server() -> AsyncIterator[Server]:
    async with running_server(admin_password=PASSWORD, admin_token="script-token") as srv:
        yield srv


async def login_form(client: httpx.AsyncClient) -> str:
    """GET /admin without a session: the login form; its CSRF field's value."""
    resp = await client.get("/admin")
    assert resp.status_code == 200
    assert "text/html" in resp.headers["content-type"]
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    match = re.search(r'name="csrf" value="([^"]+)"', resp.text)
    assert match is not None
    return match.group(1)


async def logged_in(client: httpx.AsyncClient, password: str = PASSWORD) -> str:
    """Log in; the session's CSRF token from the dashboard page."""
    token = await login_form(client)
    resp = await client.post("/admin/login", data={"csrf": token, "password": password})
    assert resp.status_code == 303 and resp.headers["location"] == "/admin"
    cookie = resp.headers.get_list("set-cookie")[0]
    assert cookie.startswith("tidings_admin=") and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Secure" not in cookie  # no TLS here
    page = await client.get("/admin")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match is not None, page.text[:300]
    return match.group(1)


async def test_admin_is_off_without_a_password() -> None:
    async with running_server() as srv, http_client(srv) as client:
        for path in ("/admin", "/admin/login", "/admin/api/overview", "/admin/static/admin.js"):
            assert (await client.get(path)).status_code == 404


async def test_api_needs_a_session(admin_server: Server) -> None:
    async with http_client(admin_server) as client:
        resp = await client.get("/admin/api/overview")
        assert resp.status_code == 401 and resp.json() == {"error": "not logged in"}
        forged = {"Cookie": "tidings_admin=made-up"}
        assert (await client.post("/admin/api/info", headers=forged)).status_code == 401


async def test_login_then_overview_and_server_api(admin_server: Server) -> None:
    async with http_client(admin_server) as client, ws_connect(admin_server, "/ws/news") as ws:
        csrf = await logged_in(client)
        await subscribed(admin_server, "news")
        overview = (await client.get("/admin/api/overview")).json()
        assert overview["connections"]["ws"] == 1 and overview["subscriptions"] == 1
        assert [n["name"] for n in overview["nodes"]] == [admin_server.app.node.name]
        headers = {"X-CSRF-Token": csrf}
        resp = await client.post(
            "/admin/api/publish", json={"channel": "news", "data": {"n": 1}}, headers=headers
        )
        assert resp.status_code == 200 and resp.json()["result"]["offset"] == 1
        assert (await ws_json(ws))["data"] == {"n": 1}
        found = await client.post("/admin/api/channels", json={"pattern": "*ew*"}, headers=headers)
        assert found.json()["result"]["channels"] == {"news": {"num_clients": 1}}
        history = await client.post(
            "/admin/api/history", json={"channel": "news", "limit": 5}, headers=headers
        )
        assert [p["data"] for p in history.json()["result"]["publications"]] == [{"n": 1}]
        # Only the dashboard's methods: no server API method beyond them.
        refused = await client.post("/admin/api/broadcast", json={}, headers=headers)
        assert refused.status_code == 404
        # Logging out ends the session.
        out = await client.post("/admin/logout", headers=headers)
        assert out.status_code == 303
        assert (await client.get("/admin/api/overview")).status_code == 401


async def test_posts_without_the_csrf_token_are_refused(admin_server: Server) -> None:
    async with http_client(admin_server) as client:
        csrf = await logged_in(client)
        body = {"channel": "news", "data": {"n": 1}}
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": csrf[:-1]}):
            resp = await client.post("/admin/api/publish", json=body, headers=headers)
            assert resp.status_code == 403
            assert resp.json() == {"error": "missing or wrong CSRF token"}
        assert admin_server.app.node.published == 0
        assert (await client.post("/admin/logout")).status_code == 403
        ok = await client.post("/admin/api/publish", json=body, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200


async def test_login_needs_its_form_token(admin_server: Server) -> None:
    async with http_client(admin_server) as client:
        await login_form(client)
        resp = await client.post("/admin/login", data={"csrf": "forged", "password": PASSWORD})
        assert (
            resp.status_code == 403
            and "tidings_admin=" not in resp.headers.get("set-cookie", "")[:14]
        )
        assert (await client.get("/admin/api/overview")).status_code == 401


async def test_bad_password_and_the_rate_limit(admin_server: Server) -> None:
    async with http_client(admin_server) as client:
        for _ in range(LOGIN_BURST):
            token = await login_form(client)
            resp = await client.post("/admin/login", data={"csrf": token, "password": "guess"})
            assert resp.status_code == 401
            assert "Wrong password." in resp.text
        token = await login_form(client)
        # Past the burst even the right password waits: a guesser can't go faster.
        resp = await client.post("/admin/login", data={"csrf": token, "password": PASSWORD})
        assert resp.status_code == 429
        assert resp.headers["retry-after"] == "12"
        assert (await client.get("/admin/api/overview")).status_code == 401


async def test_the_token_works_for_scripts_without_a_session(admin_server: Server) -> None:
    async with http_client(admin_server) as client:
        auth = {"Authorization": "Bearer script-token"}
        assert (await client.get("/admin/api/overview", headers=auth)).status_code == 200
        resp = await client.post("/admin/api/info", json={}, headers=auth)
        assert resp.status_code == 200 and len(resp.json()["result"]["nodes"]) == 1
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get("/admin/api/overview", headers=wrong)).status_code == 401


async def test_only_the_dashboard_files_are_served(
    admin_server: Server,
) -> None:
    async with http_client(admin_server) as client:
        js = await client.get("/admin/static/admin.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/admin/static/..%2Fconfig.py")).status_code == 404
        assert (await client.get("/admin/static/login.html")).status_code == 404


async def test_cookies_are_secure_under_tls(tmp_path: Path) -> None:
    certs = make_certificates(str(tmp_path))
    async with (
        running_server(
            admin_password=PASSWORD, certfile=str(certs.server_cert), keyfile=str(certs.server_key)
        ) as srv,
        http_client(srv, certs.client_context()) as client,
    ):
        resp = await client.get("/admin")
        assert "; Secure" in resp.headers["set-cookie"]
        token = re.search(r'name="csrf" value="([^"]+)"', resp.text)
        assert token is not None
        done = await client.post(
            "/admin/login", data={"csrf": token.group(1), "password": PASSWORD}
        )
        assert done.status_code == 303
        session = done.headers.get_list("set-cookie")[0]
        assert session.startswith("tidings_admin=") and "; Secure" in session
        assert (await client.get("/admin/api/overview")).status_code == 200
