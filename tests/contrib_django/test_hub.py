"""`python -m django tidings` with the project's settings: Django sessions authenticate
connections on the simple endpoints and the client protocol, per-user channels are the
user's alone, and the token views' tokens pass the hub's verifier."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import websockets.sync.client
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.db import transaction
from django.test import Client
from tidings_test_helpers import django_process, free_port, logged_in, sse_events
from tidings_test_settings import PAGE_ORIGIN

from tidings.contrib.django import send_event
from tidings.contrib.django.outbox import enqueue
from tidings.testing import TIMEOUT


@pytest.mark.django_db(transaction=True)
def test_a_plain_event_source_gets_its_users_events_by_session_cookie(hub: str) -> None:
    user, session = logged_in("ann")
    headers = {"Cookie": f"sessionid={session}", "Origin": PAGE_ORIGIN}
    with (
        httpx.Client(timeout=TIMEOUT) as http,
        http.stream("GET", f"{hub}/sse/user-{user.pk}", headers=headers) as response,
    ):
        assert response.status_code == 200
        # Cross-origin EventSource with withCredentials: an explicit origin, credentials.
        assert response.headers["access-control-allow-origin"] == PAGE_ORIGIN
        assert response.headers["access-control-allow-credentials"] == "true"
        send_event("import_done", {"contacts": 120}, channel=f"user-{user.pk}")
        event = next(sse_events(response))
    assert event["event"] == "import_done"
    message = json.loads(event["data"])
    assert (message["channel"], message["data"]) == (f"user-{user.pk}", {"contacts": 120})


@pytest.mark.django_db(transaction=True)
def test_no_session_or_a_bad_one_is_refused_like_a_bad_token(hub: str) -> None:
    user, session = logged_in("bob")
    with httpx.Client(timeout=TIMEOUT) as http:
        for cookie in ({}, {"Cookie": "sessionid=forged"}, {"Cookie": "sessionid=" + "x" * 300}):
            answer = http.get(f"{hub}/lp/user-{user.pk}", headers=cookie)
            assert answer.status_code == 403
            assert answer.json() == {"error": "invalid token", "code": 3500}
        # A session deleted from the store (a logout) no longer lets anyone in.
        SessionStore(session).delete()
        answer = http.get(f"{hub}/lp/user-{user.pk}", headers={"Cookie": f"sessionid={session}"})
        assert answer.status_code == 403


@pytest.mark.django_db(transaction=True)
def test_another_users_channel_is_refused(hub: str) -> None:
    _, session = logged_in("carl")
    other = User.objects.create_user("dora")
    with httpx.Client(timeout=TIMEOUT) as http:
        answer = http.get(f"{hub}/lp/user-{other.pk}", headers={"Cookie": f"sessionid={session}"})
    assert answer.status_code == 403
    assert answer.json()["code"] == 103


def command(ws: Any, cmd_id: int, **body: Any) -> dict[str, Any]:
    ws.send(json.dumps({"id": cmd_id, **body}))
    while True:
        reply: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
        if reply.get("id") == cmd_id:
            return reply


@pytest.mark.django_db(transaction=True)
def test_client_protocol_by_session_and_by_the_views_token(hub: str) -> None:
    user, session = logged_in("erin")
    ws_url = hub.replace("http://", "ws://") + "/connection/websocket"
    # No token: the session cookie decides, and conn.user is the Django user's id.
    with websockets.sync.client.connect(
        ws_url, additional_headers={"Cookie": f"sessionid={session}"}
    ) as ws:
        assert command(ws, 1, connect={})["connect"]["client"]
        # A subscription token from the view, for the user's own channel.
        browser = Client()
        browser.force_login(user)
        own = f"user-{user.pk}"
        grant = browser.get("/tidings/token/subscription/", {"channel": own}).json()["token"]
        assert "error" not in command(ws, 2, subscribe={"channel": own, "token": grant})
        send_event("hello", {"to": "erin"}, channel=own)
        while True:
            push = json.loads(ws.recv(timeout=TIMEOUT)).get("push", {})
            if "pub" in push:
                break
        assert push["channel"] == own and push["pub"]["data"] == {"to": "erin"}
    # The connection token the view mints for the logged-in user.
    token = browser.get("/tidings/token/connection/").json()["token"]
    with websockets.sync.client.connect(ws_url) as ws:
        reply = command(ws, 1, connect={"token": token})
        assert "error" not in reply, reply
    with websockets.sync.client.connect(ws_url) as ws:
        ws.send(json.dumps({"id": 1, "connect": {"token": token[:-4] + "AAAA"}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 3500


@pytest.mark.django_db(transaction=True)
def test_manage_py_tidings_outbox_delivers_the_outbox_beside_the_hub() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    user, session = logged_in("olga")
    with (
        django_process(["tidings", "--outbox"], url, "tidings serving on"),
        httpx.Client(timeout=TIMEOUT) as http,
        http.stream(
            "GET", f"{url}/sse/user-{user.pk}", headers={"Cookie": f"sessionid={session}"}
        ) as response,
    ):
        assert response.status_code == 200
        with transaction.atomic():
            enqueue(f"user-{user.pk}", {"report": "ready"}, event="report")
        event = next(sse_events(response))
    assert event["event"] == "report"
    assert json.loads(event["data"])["data"] == {"report": "ready"}
