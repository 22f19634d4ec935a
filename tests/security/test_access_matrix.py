"""The access matrix: every kind of credential against every kind of channel, through the
real client protocol. Each cell is what the server must answer; nothing else passes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from integration_helpers import ws_close_code, ws_connect
from websockets.exceptions import ConnectionClosed

from tidings.core.tokens import mint_token
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

SECRET = "access-matrix-secret-0123456789abcdef"
OTHER = "another-secret-0123456789abcdef012345"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(
        token_hmac_secret_key=SECRET,
        token_audience="app",
        default_namespace={"allow_subscribe_for_client": True},
        namespaces={"dm": {"allow_user_limited_channels": True}, "priv": {}},
    ) as srv:
        yield srv


def token(sub: str = "42", **claims: Any) -> str:
    claims.setdefault("aud", "app")
    return mint_token(SECRET, sub, **claims)


# Connection credentials → (close code, or None when connected).
CONNECT = {
    "valid": (lambda: token(), None),
    "expired": (lambda: token(ttl=-60), "109"),
    "wrong signature": (lambda: mint_token(OTHER, "42", aud="app"), 3500),
    "alg none": (
        lambda: jwt.encode({"sub": "42", "aud": "app"}, None, algorithm="none"),  # type: ignore[arg-type]
        3500,
    ),
    "wrong audience": (lambda: token(aud="elsewhere"), 3500),
    "no audience": (lambda: mint_token(SECRET, "42"), 3500),
    "subscription token": (lambda: token(channel="news"), 3500),
    "not a jwt": (lambda: "not.a.token", 3500),
    "no token": (lambda: "", 3501),
}


@asynccontextmanager
async def connected(srv: Server, credential: str) -> AsyncIterator[tuple[Any, Any]]:
    """A client-protocol WebSocket after its connect: the reply, or the close code."""
    async with ws_connect(srv, "/connection/websocket") as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": credential}}))
        try:
            async with asyncio.timeout(TIMEOUT):
                outcome: Any = json.loads(await ws.recv())
        except ConnectionClosed:
            outcome = await ws_close_code(ws)
        yield ws, outcome


@pytest.mark.parametrize("kind", CONNECT)
async def test_connect(server: Server, kind: str) -> None:
    make, expected = CONNECT[kind]
    async with connected(server, make()) as (_, outcome):
        if expected is None:
            assert isinstance(outcome, dict) and "connect" in outcome, outcome
        elif expected == "109":
            assert isinstance(outcome, dict) and outcome["error"]["code"] == 109
        else:
            assert outcome == expected, outcome


# Channels for a client connected as user 42 → the subscribe reply's error code (None: ok),
# or a close code when the attempt ends the connection.
def subscribe_cases() -> dict[str, tuple[dict[str, Any], int | None]]:
    now = int(time.time())
    return {
        "open channel": ({"channel": "news"}, None),
        "unknown namespace": ({"channel": "nowhere:x"}, 102),
        "namespace closed to clients": ({"channel": "priv:x"}, 103),
        "private, no token": ({"channel": "$secret"}, 103),
        "private, its token": ({"channel": "$secret", "token": token(channel="$secret")}, None),
        "private, another channel's token": (
            {"channel": "$secret", "token": token(channel="$other")},
            3500,
        ),
        "private, another user's token": (
            {"channel": "$secret", "token": token("7", channel="$secret")},
            3500,
        ),
        "private, expired token": (
            {"channel": "$secret", "token": token(channel="$secret", exp=now - 60, ttl=None)},
            109,
        ),
        "private, a connection token": ({"channel": "$secret", "token": token()}, 103),
        "user-limited, listed": ({"channel": "dm:chat#42,7"}, None),
        "user-limited, not listed": ({"channel": "dm:chat#7,8"}, 103),
        "bad name": ({"channel": "bad name"}, 107),
    }


@pytest.mark.parametrize("case", list(subscribe_cases()))
async def test_subscribe(server: Server, case: str) -> None:
    params, expected = subscribe_cases()[case]
    async with connected(server, token()) as (ws, outcome):
        assert isinstance(outcome, dict) and "connect" in outcome
        await ws.send(json.dumps({"id": 2, "subscribe": params}))
        try:
            async with asyncio.timeout(TIMEOUT):
                reply = json.loads(await ws.recv())
        except ConnectionClosed:
            assert expected == await ws_close_code(ws)
            return
        if expected is None:
            assert "subscribe" in reply, reply
        elif expected >= 3000:
            pytest.fail(f"expected close {expected}, got {reply}")
        else:
            assert reply["error"]["code"] == expected, reply
