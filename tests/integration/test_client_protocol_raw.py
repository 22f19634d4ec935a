"""The client protocol spoken by hand (JSON lines over ``websockets``), for input no SDK sends.

Each kind of bad input gets the code Centrifugo documents (see
docs/centrifugo-reference.md, §2-3 and §8), and afterwards another client on the same server
still connects, subscribes and receives.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from integration_helpers import until, ws_close_code, ws_connect
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from tidings.core.tokens import mint_token
from tidings.exceptions import BrokerUnavailable
from tidings.protocol.centrifuge import protobuf
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

SECRET = "tidings-raw-tests-hmac-secret-0123456789"
CHANNELS = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_subscriber": True,
    "allow_history_for_subscriber": True,
    "allow_presence_for_subscriber": True,
    "presence": True,
}

pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(token_hmac_secret_key=SECRET, default_namespace=CHANNELS) as srv:
        yield srv


@asynccontextmanager
async def raw(server: Server) -> AsyncIterator[ClientConnection]:
    async with ws_connect(server, "/connection/websocket") as ws:
        yield ws


async def send(ws: ClientConnection, *commands: dict[str, Any]) -> None:
    """Several commands in one text frame, one per line."""
    await ws.send("\n".join(json.dumps(c) for c in commands))


async def frame(ws: ClientConnection) -> list[dict[str, Any]]:
    """The replies of the next frame."""
    data = await ws.recv(decode=True)
    assert isinstance(data, str)
    assert not data.endswith("\n"), "no trailing newline (SDKs split on it)"
    return [json.loads(line) for line in data.split("\n")]


async def replies(ws: ClientConnection, count: int) -> dict[int, dict[str, Any]]:
    """Read until ``count`` command replies arrived; keyed by id (pushes and pings skipped)."""
    got: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(TIMEOUT):
        while len(got) < count:
            for reply in await frame(ws):
                if reply.get("id"):
                    assert reply["id"] not in got, f"two replies to {reply['id']}"
                    got[reply["id"]] = reply
    return got


async def reply(ws: ClientConnection, cmd_id: int) -> dict[str, Any]:
    return (await replies(ws, 1))[cmd_id]


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    code = await ws_close_code(ws)
    return code, ws.close_reason


def connect_cmd(token: str, cmd_id: int = 1) -> dict[str, Any]:
    return {"id": cmd_id, "connect": {"token": token, "name": "raw"}}


async def assert_serving(server: Server) -> None:
    """A well-behaved client on the same server still connects, subscribes and receives."""
    async with raw(server) as ws:
        await send(
            ws,
            connect_cmd(mint_token(SECRET, "7")),
            {"id": 2, "subscribe": {"channel": "alive"}},
        )
        got = await replies(ws, 2)
        assert "connect" in got[1] and "subscribe" in got[2], got
        await server.app.node.publish("alive", b'{"still":"here"}')
        while True:
            pushes = [r["push"] for r in await frame(ws) if "push" in r]
            if pushes:
                break
        assert pushes[0] == {"channel": "alive", "pub": {"data": {"still": "here"}, "offset": 1}}


# Framing and state


async def test_several_commands_in_one_frame(server: Server) -> None:
    async with raw(server) as ws:
        await send(
            ws,
            connect_cmd(mint_token(SECRET, "42")),
            {"id": 2, "subscribe": {"channel": "room"}},
            {"id": 3, "publish": {"channel": "room", "data": {"n": 1}}},
            {"id": 4, "history": {"channel": "room", "limit": 10}},
            {"id": 5, "presence_stats": {"channel": "room"}},
            {"id": 6, "rpc": {"method": "nope"}},
        )
        got = await replies(ws, 6)
        assert got[1]["connect"]["client"] in server.app.node.clients
        assert got[1]["connect"]["pong"] is True
        assert got[2] == {"id": 2, "subscribe": {}}
        assert got[3] == {"id": 3, "publish": {}}
        pubs = got[4]["history"]["publications"]
        assert [p["data"] for p in pubs] == [{"n": 1}]
        assert pubs[0]["info"]["user"] == "42"
        assert got[5]["presence_stats"] == {"num_clients": 1, "num_users": 1}
        assert got[6]["error"]["code"] == 104
    await assert_serving(server)


@pytest.mark.parametrize(
    "data",
    [
        '{"id": 1, "connect": {',
        "not json at all",
        "[1, 2, 3]",
        '{"id": 1, "connect": {"token": 42}}',
        '{"id": 1, "connect": {}}\n{broken',
    ],
    ids=["truncated", "text", "array", "wrong-type", "second-line-broken"],
)
async def test_malformed_json(server: Server, data: str) -> None:
    async with raw(server) as ws:
        await ws.send(data)
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


async def test_malformed_json_after_connect(server: Server) -> None:
    async with raw(server) as ws:
        await send(ws, connect_cmd(mint_token(SECRET, "42")))
        assert "connect" in await reply(ws, 1)
        await ws.send('{"id": 2, "subscribe": ')
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


async def test_command_before_connect(server: Server) -> None:
    async with raw(server) as ws:
        await send(ws, {"id": 1, "subscribe": {"channel": "room"}})
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


async def test_second_connect(server: Server) -> None:
    token = mint_token(SECRET, "42")
    async with raw(server) as ws:
        await send(ws, connect_cmd(token))
        assert "connect" in await reply(ws, 1)
        await send(ws, connect_cmd(token, 2))
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


async def test_unknown_method(server: Server) -> None:
    async with raw(server) as ws:
        await send(ws, connect_cmd(mint_token(SECRET, "42")))
        assert "connect" in await reply(ws, 1)
        await send(ws, {"id": 2, "launch": {"rockets": 3}})
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


async def test_binary_frame_on_json_connection(server: Server) -> None:
    async with raw(server) as ws:
        await send(ws, connect_cmd(mint_token(SECRET, "42")))
        assert "connect" in await reply(ws, 1)
        await ws.send(json.dumps({"id": 2, "presence": {"channel": "room"}}).encode())
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


async def test_oversized_frame(server: Server) -> None:
    async with raw(server) as ws:
        await send(ws, connect_cmd(mint_token(SECRET, "42")))
        assert "connect" in await reply(ws, 1)
        big = "x" * (server.config.max_message_bytes + 1)
        await send(ws, {"id": 2, "publish": {"channel": "room", "data": big}})
        assert (await closed_with(ws))[0] == 1009  # message too big
    await assert_serving(server)


# Tokens


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    """``header.payload.`` of a JWT, without a signature."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def claims(user: str = "42", **extra: Any) -> dict[str, Any]:
    return {"sub": user, "exp": int(time.time()) + 3600, **extra}


def hs256(claims: dict[str, Any], key: bytes) -> str:
    """HS256 by hand: PyJWT refuses to use a public key as an HMAC secret, an attacker won't."""
    signing_input = unsigned(claims, {"alg": "HS256", "typ": "JWT"})[:-1]
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def refused(server: Server, token: str) -> tuple[int | None, str | None]:
    async with raw(server) as ws:
        await send(ws, connect_cmd(token))
        result = await closed_with(ws)
    await assert_serving(server)
    return result


@pytest.mark.parametrize(
    "token",
    [
        mint_token("another-secret-with-enough-length-0123456", "42"),
        mint_token(SECRET, "42")[:-4] + "AAAA",
        unsigned(claims(), {"alg": "none", "typ": "JWT"}),
        unsigned(claims(), {"alg": "None", "typ": "JWT"}),
        "not.a.jwt",
        "garbage",
        jwt.encode({"exp": int(time.time()) + 3600}, SECRET, algorithm="HS256"),  # no sub
    ],
    ids=["other-secret", "bad-signature", "alg-none", "alg-None", "not-jwt", "garbage", "no-sub"],
)
async def test_untrusted_connection_token(server: Server, token: str) -> None:
    assert await refused(server, token) == (3500, "invalid token")


async def test_expired_token_is_an_error_reply(server: Server) -> None:
    expired = jwt.encode({"sub": "42", "exp": int(time.time()) - 10}, SECRET, algorithm="HS256")
    async with raw(server) as ws:
        await send(ws, connect_cmd(expired))
        assert (await reply(ws, 1))["error"] == {"code": 109, "message": "token expired"}
        # Not a disconnect: the SDK closes and reconnects with a fresh token itself.
        pong = await asyncio.wait_for(ws.ping(), TIMEOUT)
        await asyncio.wait_for(pong, TIMEOUT)
        # After a failed connect the connection is unusable (Centrifugo marks it so).
        await send(ws, connect_cmd(mint_token(SECRET, "42"), 2))
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


@pytest.mark.parametrize("channel", ["$room", "room"])
async def test_subscription_token_does_not_connect(server: Server, channel: str) -> None:
    # A grant for one channel must not open a session as its user (Centrifugo: a connection
    # token can't carry a channel claim).
    assert await refused(server, mint_token(SECRET, "42", channel=channel)) == (
        3500,
        "invalid token",
    )


async def test_subscription_token_does_not_refresh_a_connection(server: Server) -> None:
    async with raw(server) as ws:
        await send(ws, connect_cmd(mint_token(SECRET, "42")))
        assert "connect" in await reply(ws, 1)
        sub_token = mint_token(SECRET, "42", channel="$room")
        await send(ws, {"id": 2, "refresh": {"token": sub_token}})
        assert await closed_with(ws) == (3500, "invalid token")
    await assert_serving(server)


async def test_connection_token_does_not_authorise_a_subscription(server: Server) -> None:
    connection_token = mint_token(SECRET, "42")
    sub_token = mint_token(SECRET, "42", channel="$room")
    async with raw(server) as ws:
        await send(
            ws,
            connect_cmd(connection_token),
            {"id": 2, "subscribe": {"channel": "$room", "token": connection_token}},
            {"id": 3, "subscribe": {"channel": "$room", "token": sub_token}},
        )
        got = await replies(ws, 3)
        assert got[2]["error"]["code"] == 103  # permission denied
        assert "subscribe" in got[3], got[3]  # what a subscription token is for
        # Nor refresh one: on sub_refresh a bad token is a disconnect.
        await send(ws, {"id": 4, "sub_refresh": {"channel": "$room", "token": connection_token}})
        assert await closed_with(ws) == (3500, "invalid token")
    await assert_serving(server)


def pem_public(key: Any) -> str:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return str(public.decode())


async def test_asymmetric_keys_and_algorithm_confusion() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    other_ec = ec.generate_private_key(ec.SECP256R1())
    rsa_public = pem_public(rsa_key)
    async with running_server(
        token_rsa_public_key=rsa_public,
        token_ecdsa_public_key=pem_public(ec_key),
        default_namespace=CHANNELS,
    ) as server:
        for key, alg in ((rsa_key, "RS256"), (rsa_key, "RS512"), (ec_key, "ES256")):
            await assert_serving_with(server, jwt.encode(claims(), key, algorithm=alg))

        good = jwt.encode(claims(), rsa_key, algorithm="RS256")
        for bad in (
            # HS256 "signed" with the RSA public key: only RS* may use that key.
            hs256(claims(), rsa_public.encode()),
            # No HMAC secret is configured at all.
            mint_token(SECRET, "42"),
            # ES256 by a key the server doesn't know.
            jwt.encode(claims(), other_ec, algorithm="ES256"),
            # An algorithm outside the allowed list, with the right key.
            jwt.encode(claims(), rsa_key, algorithm="PS256"),
        ):
            async with raw(server) as ws:
                await send(ws, connect_cmd(bad))
                assert await closed_with(ws) == (3500, "invalid token")
            await assert_serving_with(server, good)


async def test_audience_and_issuer() -> None:
    async with running_server(
        token_hmac_secret_key=SECRET,
        token_audience="tidings-app",
        token_issuer="https://auth.example",
        default_namespace=CHANNELS,
    ) as server:
        good = claims(aud="tidings-app", iss="https://auth.example")
        async with raw(server) as ws:
            await send(ws, connect_cmd(jwt.encode(good, SECRET, algorithm="HS256")))
            assert "connect" in await reply(ws, 1)
        for bad in (
            {**good, "aud": "another-app"},
            {**good, "iss": "https://evil.example"},
            {k: v for k, v in good.items() if k != "aud"},
            {k: v for k, v in good.items() if k != "iss"},
        ):
            token = jwt.encode(bad, SECRET, algorithm="HS256")
            async with raw(server) as ws:
                await send(ws, connect_cmd(token))
                assert await closed_with(ws) == (3500, "invalid token"), bad
            await assert_serving_with(server, jwt.encode(good, SECRET, algorithm="HS256"))


async def assert_serving_with(server: Server, token: str) -> None:
    async with raw(server) as ws:
        await send(ws, connect_cmd(token), {"id": 2, "subscribe": {"channel": "alive"}})
        got = await replies(ws, 2)
        assert got[2] == {"id": 2, "subscribe": {}}


# Ping / pong


async def test_server_ping_and_no_pong() -> None:
    async with running_server(
        token_hmac_secret_key=SECRET, default_namespace=CHANNELS, ping_interval=1
    ) as server:
        async with raw(server) as ws:
            await send(ws, connect_cmd(mint_token(SECRET, "42")))
            assert (await reply(ws, 1))["connect"]["ping"] == 1
            assert await frame(ws) == [{}]  # a ping
            await ws.send("{}")  # the pong
            assert await frame(ws) == [{}]  # answered: the next ping comes
            # Not answered this time: the server gives up on the connection.
            assert await closed_with(ws) == (3012, "no pong")
        await assert_serving(server)


async def test_pong_without_ping(server: Server) -> None:
    async with raw(server) as ws:
        await send(ws, connect_cmd(mint_token(SECRET, "42")))
        assert "connect" in await reply(ws, 1)
        # Centrifugo: a command without id (other than send) is a pong, and a pong that
        # answers no ping is a protocol violation.
        await ws.send("{}")
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


async def test_message_push_reaches_every_connection_of_a_user() -> None:
    secret = "m" * 32
    async with running_server(token_hmac_secret_key=secret) as server:
        token = mint_token(secret, "42")
        path = "/connection/websocket"
        async with ws_connect(server, path) as a, ws_connect(server, path) as b:
            for ws in (a, b):
                await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
                assert "connect" in json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert server.app.node.send_message("42", b'{"hello":"you"}') == 2
            for ws in (a, b):
                push = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                assert push == {"push": {"message": {"data": {"hello": "you"}}}}


async def test_too_many_queued_commands_is_3013() -> None:
    from tidings.core.client import MAX_QUEUED_COMMANDS

    big = {"max_message_bytes": 1 << 20, "token_hmac_secret_key": SECRET}
    async with running_server(default_namespace=CHANNELS, **big) as server:
        async with raw(server) as ws:
            await send(ws, connect_cmd(mint_token(SECRET, "42")))
            await reply(ws, 1)
            # One frame (allowed by the large message limit) with more commands than a
            # connection may queue.
            flood = [{"id": n, "presence_stats": {"channel": "room"}} for n in range(2, 2000)]
            assert len(flood) > MAX_QUEUED_COMMANDS
            await send(ws, *flood)
            assert (await closed_with(ws))[0] == 3013
        await assert_serving(server)


# Failures mid-subscribe, stale connections, lost deliveries


async def test_failed_presence_step_leaves_no_half_subscription(server: Server) -> None:
    """Regression (defect 1): a subscribe whose presence step failed answered 100 but kept
    the channel: the retry answered 105 and publications never arrived."""
    manager = server.app.node.presence_manager
    real_add = manager.add
    failures = 0

    async def fail_once(channel: str, info: Any) -> None:
        nonlocal failures
        if not failures:
            failures += 1
            raise BrokerUnavailable("presence store timed out")  # injected fault
        await real_add(channel, info)

    manager.add = fail_once  # type: ignore[method-assign]
    async with raw(server) as ws:
        await send(ws, connect_cmd(mint_token(SECRET, "42")))
        await reply(ws, 1)
        await send(ws, {"id": 2, "subscribe": {"channel": "room"}})
        assert (await reply(ws, 2))["error"] == {
            "code": 100,
            "message": "internal server error",
            "temporary": True,
        }
        assert server.app.node.hub.count("room") == 0
        await send(ws, {"id": 3, "subscribe": {"channel": "room"}})
        assert "subscribe" in await reply(ws, 3)
        await server.app.node.publish("room", b'{"n":1}')
        pushes: list[dict[str, Any]] = []
        while not pushes:
            pushes = [r["push"] for r in await frame(ws) if "pub" in r.get("push", {})]
        assert pushes == [{"channel": "room", "pub": {"data": {"n": 1}, "offset": 1}}]
    assert list(await server.app.node.presence_manager.presence("room")) == []


@pytest.mark.parametrize("path", ["/connection/websocket", "/connection/uni_websocket"])
async def test_connection_that_never_connects_is_closed_as_stale(path: str) -> None:
    """Regression (defect 3): a socket that upgraded and said nothing held its slot forever."""
    async with (
        running_server(
            token_hmac_secret_key=SECRET, default_namespace=CHANNELS, client_connect_timeout=0.3
        ) as srv,
        ws_connect(srv, path) as ws,
    ):
        assert await closed_with(ws) == (3502, "stale")
        await until(lambda: srv.app.connection_counts()["client"] == 0, "the slot freed")
        await assert_serving(srv)


async def test_connection_whose_connect_failed_is_closed_as_stale() -> None:
    async with (
        running_server(
            token_hmac_secret_key=SECRET, default_namespace=CHANNELS, client_connect_timeout=0.3
        ) as srv,
        raw(srv) as ws,
    ):
        expired = mint_token(SECRET, "42", ttl=-10)
        await send(ws, connect_cmd(expired))
        assert (await reply(ws, 1))["error"]["code"] == 109
        assert await closed_with(ws) == (3502, "stale")


async def test_connect_subs_count_against_the_channel_limit() -> None:
    async with (
        running_server(
            token_hmac_secret_key=SECRET, default_namespace=CHANNELS, client_max_channels=3
        ) as srv,
        raw(srv) as ws,
    ):
        wanted = {f"c{i}": {} for i in range(5)}
        await send(ws, {"id": 1, "connect": {"token": mint_token(SECRET, "42"), "subs": wanted}})
        assert await closed_with(ws) == (3505, "channel limit")
        assert srv.app.node.hub.count("c0") == 0


async def test_unfillable_gap_resubscribes_a_positioned_subscription() -> None:
    """A delivery lost between nodes that history can't give back: a subscription that
    keeps a position is told "insufficient state" (2500) and resubscribes from it."""
    opts = {**CHANNELS, "force_positioning": True, "history_size": 0, "history_ttl": 0}
    async with (
        running_server(token_hmac_secret_key=SECRET, default_namespace=opts) as srv,
        raw(srv) as ws,
    ):
        await send(
            ws, connect_cmd(mint_token(SECRET, "42")), {"id": 2, "subscribe": {"channel": "g"}}
        )
        assert (await replies(ws, 2))[2]["subscribe"]["positioned"] is True
        node = srv.app.node
        backend = node.broker.backend  # type: ignore[attr-defined]
        backend.lose = lambda pub, receiver: pub.offset == 2  # injected fault: lost delivery
        for i in range(3):
            await node.publish("g", b'{"n":%d}' % i)
        pushes: list[dict[str, Any]] = []
        async with asyncio.timeout(TIMEOUT):
            while not any("unsubscribe" in p for p in pushes):
                pushes += [r["push"] for r in await frame(ws) if "push" in r]
        assert pushes[0]["pub"]["offset"] == 1
        assert pushes[-1] == {
            "channel": "g",
            "unsubscribe": {"code": 2500, "reason": "insufficient state"},
        }
        assert node.hub.count("g") == 0


# Hostile frames: each is answered with a protocol code, never a traceback (the module's
# no_server_errors fixture fails any test during which the server logged an error).


@asynccontextmanager
async def raw_protobuf(server: Server) -> AsyncIterator[ClientConnection]:
    async with ws_connect(
        server, "/connection/websocket", subprotocols=[Subprotocol("centrifuge-protobuf")]
    ) as ws:
        assert ws.subprotocol == "centrifuge-protobuf"
        yield ws


async def protobuf_replies(ws: ClientConnection, count: int) -> dict[int, dict[str, Any]]:
    """Read until ``count`` command replies arrived; keyed by id (pushes and pings skipped)."""
    got: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(TIMEOUT):
        while len(got) < count:
            data = await ws.recv()
            assert isinstance(data, bytes)
            got.update((r["id"], r) for r in protobuf.decode_delimited("Reply", data) if "id" in r)
    return got


def nested_json(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize(
    "frame",
    [
        # Command{id 1, connect{subs{entry: a key as a varint of 150,000,000}}}: the
        # reported frame, which made the server allocate 143 MB.
        bytes.fromhex("0b080122071a050880a3c347"),
        # Command{id 1, connect{subs{entry{key "a", value: a varint}}}}: a varint where a
        # message is expected (the old decoder raised TypeError).
        bytes.fromhex("0b080122071a050a01611005"),
    ],
    ids=["reported-frame", "varint-for-message"],
)
async def test_protobuf_frames_that_lie_about_types_connect_without_a_token(
    server: Server, frame: bytes
) -> None:
    # Each decodes to a connect without a token (the bad map entry dropped), refused as
    # any such connect is.
    async with raw_protobuf(server) as ws:
        await ws.send(frame)
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


@pytest.mark.parametrize(
    "frame",
    [
        b"\x8b\x80\xc3\x47\x08\x01",  # a message length of 150,000,000 in a 6-byte frame
        b"\x0b\x08\x01\x22\x07\x1a\x05\x0a\x80\xa3\xc3\x47",  # a map key of that length
        b"\x01" + b"\x0f",  # wire type 7
        b"\xff" * 11,  # an eleven-byte varint
    ],
    ids=["message-length", "map-key-length", "wire-type-7", "long-varint"],
)
async def test_malformed_protobuf_frames_are_3501(server: Server, frame: bytes) -> None:
    async with raw_protobuf(server) as ws:
        await ws.send(frame)
        assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)


@pytest.mark.parametrize(("levels", "accepted"), [(254, True), (255, False), (1024, False)])
async def test_json_payloads_deeper_than_254_levels_are_3501(
    server: Server, levels: int, accepted: bool
) -> None:
    payload = nested_json(levels)
    for binary in (False, True):
        connection = raw_protobuf(server) if binary else raw(server)
        async with connection as ws:
            start = [
                connect_cmd(mint_token(SECRET, "42")),
                {"id": 2, "subscribe": {"channel": "r"}},
            ]
            if binary:
                await ws.send(b"".join(protobuf.encode_delimited("Command", c) for c in start))
                assert "subscribe" in (await protobuf_replies(ws, 2))[2]
                publish = {"id": 3, "publish": {"channel": "r", "data": payload}}
                await ws.send(protobuf.encode_delimited("Command", publish))
            else:
                await send(ws, *start)
                assert "subscribe" in (await replies(ws, 2))[2]
                line = b'{"id":3,"publish":{"channel":"r","data":' + payload + b"}}"
                await ws.send(line.decode())  # a text frame
            if accepted:
                got = (await protobuf_replies(ws, 1)) if binary else (await replies(ws, 1))
                assert got[3] == {"id": 3, "publish": {}}
            else:
                assert await closed_with(ws) == (3501, "bad request")
    await assert_serving(server)
