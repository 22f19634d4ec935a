"""What a proxy backend grants beyond a yes: the connect result's ``subs`` (server-side
subscriptions with their options) and ``caps`` (channel capabilities, taken back by a
refresh), against a real backend, raw WebSockets and the official Python SDK."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from integration_helpers import ws_connect
from test_client_sdk import sdk as sdk_client
from test_client_sdk import value
from test_proxy import SECRET, Backend, backend, command, push, settings

from tidings.core.tokens import mint_token
from tidings.testing import running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")

# A namespace that allows nothing by itself: only capabilities open it.
LOCKED: dict[str, Any] = {"presence": True, "history_size": 10, "history_ttl": 300}


def grants(app: Backend, **more: Any) -> dict[str, Any]:
    config = settings(app, **more)
    config["namespaces"] = {**config["namespaces"], "locked": LOCKED}
    return config


def quiet(app: Backend) -> None:
    for path in ("/disconnect", "/unsubscribe", "/subscribe"):
        app.answers.setdefault(path, lambda body: {})


SUBS = {
    "news": {"info": {"seat": 1}, "data": {"welcome": "news"}},
    "sports": {
        "override": {"presence": {"value": False}},
        "b64data": base64.b64encode(b'{"from":"b64"}').decode(),
    },
    "weather": {},
}


async def test_connect_subs_are_made_with_their_options() -> None:
    async with backend() as app:
        quiet(app)
        app.answers["/connect"] = lambda body: {"result": {"user": "56", "subs": SUBS}}
        async with (
            running_server(**grants(app)) as server,
            ws_connect(server, "/connection/websocket") as ws,
        ):
            result = (await command(ws, {"id": 1, "connect": {}}))["connect"]
            subs = result["subs"]
            assert sorted(subs) == ["news", "sports", "weather"]
            assert subs["news"]["data"] == {"welcome": "news"}
            assert subs["sports"]["data"] == {"from": "b64"}
            assert "data" not in subs["weather"]
            assert subs["weather"]["recoverable"] is True  # the namespace forces recovery
            # The channel info is the subscription's: presence and publications show it.
            here = await command(ws, {"id": 2, "presence": {"channel": "news"}})
            assert here["presence"]["presence"][result["client"]]["chan_info"] == {"seat": 1}
            said = await command(ws, {"id": 3, "publish": {"channel": "news", "data": {"x": 1}}})
            assert said == {"id": 3, "publish": {}}
            pub = (await push(ws))["pub"]
            assert pub["info"]["chan_info"] == {"seat": 1}
            # The override turned presence off for this one subscription.
            empty = await command(ws, {"id": 4, "presence": {"channel": "sports"}})
            assert empty["presence"] == {"presence": {}}


async def test_connect_subs_reach_the_official_sdk() -> None:
    async with backend() as app:
        quiet(app)
        app.answers["/connect"] = lambda body: {"result": {"user": "56", "subs": SUBS}}
        async with running_server(**grants(app)) as server:
            for use_protobuf in (False, True):
                async with sdk_client(server, use_protobuf, token="") as alice:
                    await alice.connect()
                    seen = {}
                    for _ in range(3):
                        ctx = await alice.events.next("subscribed")
                        seen[ctx.channel] = value(ctx.data) if ctx.data else None
                    assert seen == {
                        "news": {"welcome": "news"},
                        "sports": {"from": "b64"},
                        "weather": None,
                    }


CAPS = [
    {"channels": ["locked:news"], "allow": ["sub"]},
    # Never looked at for locked:news: the first object naming a channel decides.
    {"channels": ["locked:news", "locked:all"], "allow": ["sub", "pub", "prs", "hst"]},
    {"channels": ["locked:pub-*"], "match": "wildcard", "allow": ["sub", "pub"]},
    {"channels": [r"^locked:r\d+$"], "match": "regex", "allow": ["sub", "hst"]},
]


async def test_connect_caps_grant_what_they_list_and_nothing_more() -> None:
    async with backend() as app:
        quiet(app)
        app.answers["/connect"] = lambda body: {"result": {"user": "56", "caps": CAPS}}
        async with running_server(**grants(app)) as server:
            async with ws_connect(server, "/connection/websocket") as ws:
                await command(ws, {"id": 1, "connect": {}})

                async def code(n: int, method: str, **params: Any) -> int | None:
                    reply = await command(ws, {"id": n, method: params})
                    return reply.get("error", {}).get("code")

                assert await code(2, "subscribe", channel="locked:other") == 103
                assert await code(3, "subscribe", channel="locked:news") is None
                assert await code(4, "publish", channel="locked:news", data={}) == 103
                assert await code(5, "presence", channel="locked:news") == 103
                assert await code(6, "history", channel="locked:news") == 103
                assert await code(7, "subscribe", channel="locked:all") is None
                assert await code(8, "publish", channel="locked:all", data={"a": 1}) is None
                assert await code(9, "presence", channel="locked:all") is None
                assert await code(10, "history", channel="locked:all", limit=5) is None
                assert await code(11, "subscribe", channel="locked:pub-9") is None
                assert await code(12, "publish", channel="locked:pub-9", data={}) is None
                assert await code(13, "history", channel="locked:pub-9") == 103
                assert await code(14, "subscribe", channel="locked:r1x") == 103
                recoverable = await command(
                    ws, {"id": 15, "subscribe": {"channel": "locked:r12", "recoverable": True}}
                )
                assert recoverable["subscribe"]["recoverable"] is True  # "hst"
            # A connection without the caps: the namespace allows none of it.
            async with ws_connect(server, "/connection/websocket") as ws:
                await command(ws, {"id": 1, "connect": {"token": mint_token(SECRET, "7")}})
                refused = await command(ws, {"id": 2, "subscribe": {"channel": "locked:all"}})
                assert refused["error"]["code"] == 103


async def test_caps_with_the_official_sdk() -> None:
    async with backend() as app:
        quiet(app)
        app.answers["/connect"] = lambda body: {"result": {"user": "56", "caps": CAPS}}
        async with (
            running_server(**grants(app)) as server,
            sdk_client(server, False, token="") as alice,
        ):
            await alice.connect()
            sub, events = await alice.subscribe("locked:all")
            await sub.publish({"hello": 1})
            got = await events.next("publication")
            assert value(got.pub.data) == {"hello": 1}


async def test_a_refresh_that_takes_caps_back_unsubscribes_what_they_admitted() -> None:
    async with backend() as app:
        quiet(app)
        soon = int(time.time()) + 1
        app.answers["/connect"] = lambda body: {
            "result": {"user": "56", "expire_at": soon, "caps": CAPS}
        }
        only_news = [{"channels": ["locked:news"], "allow": ["sub"]}]
        app.answers["/refresh"] = lambda body: {
            "result": {"expire_at": int(time.time()) + 60, "caps": only_news}
        }
        async with (
            running_server(**grants(app)) as server,
            ws_connect(server, "/connection/websocket") as ws,
        ):
            await command(ws, {"id": 1, "connect": {}})
            for n, channel in enumerate(("locked:news", "locked:all", "news"), start=2):
                assert "subscribe" in await command(
                    ws, {"id": n, "subscribe": {"channel": channel}}
                )
            await app.next("/refresh")
            gone = await push(ws)
            assert gone == {
                "channel": "locked:all",
                "unsubscribe": {"code": 2000, "reason": "server unsubscribe"},
            }
            # locked:news is still allowed, news was the namespace's: both stay.
            client = next(iter(server.app.node.clients.values()))
            assert sorted(client.subs) == ["locked:news", "news"]


async def test_bad_caps_or_subs_from_the_backend_are_a_temporary_error(caplog) -> None:
    async with backend() as app:
        quiet(app)
        answers = iter(
            [
                {"result": {"caps": [{"channels": ["x"], "allow": ["sub"], "match": "glob"}]}},
                {"result": {"subs": ["news"]}},
                {"result": {"subs": {"news": "not options"}}},
            ]
        )
        app.answers["/connect"] = lambda body: next(answers)
        async with running_server(**grants(app)) as server:
            for _ in range(3):
                async with ws_connect(server, "/connection/websocket") as ws:
                    reply = await command(ws, {"id": 1, "connect": {}})
                    assert reply["error"]["code"] == 100
    assert "proxy answer" in caplog.text or "on_connect hooks returned" in caplog.text
    caplog.clear()


async def test_publish_proxy_results_skip_history_tags_and_idempotency_key() -> None:
    async with backend() as app:
        quiet(app)

        def publish(body: dict[str, Any]) -> Any:
            n = body["data"]["n"]
            how = {
                1: {"skip_history": True},
                2: {"tags": {"kind": "two"}, "data": {"n": 2, "checked": True}},
                3: {"idempotency_key": "three"},
            }
            return {"result": how.get(n, {})}

        app.answers["/publish"] = publish
        async with (
            running_server(**settings(app)) as server,
            ws_connect(server, "/connection/websocket") as alice,
            ws_connect(server, "/connection/websocket") as bob,
        ):
            for ws, user in ((alice, "1"), (bob, "2")):
                await command(ws, {"id": 1, "connect": {"token": mint_token(SECRET, user)}})
                await command(ws, {"id": 2, "subscribe": {"channel": "chat:1"}})
            for i, n in enumerate((1, 2, 3, 3, 4), start=10):
                said = {"id": i, "publish": {"channel": "chat:1", "data": {"n": n}}}
                assert await command(alice, said) == {"id": i, "publish": {}}
            got = [(await push(bob))["pub"] for _ in range(4)]
            assert [p["data"] for p in got] == [
                {"n": 1},
                {"n": 2, "checked": True},
                {"n": 3},  # once: the repeat with the same key published nothing
                {"n": 4},
            ]
            assert got[1]["tags"] == {"kind": "two"} and "tags" not in got[2]
            assert [p["offset"] for p in got] == [1, 2, 3, 4]  # docs/protocol.md: skipped too
            history = await command(bob, {"id": 3, "history": {"channel": "chat:1", "limit": 10}})
            kept = history["history"]["publications"]
            assert [p["data"]["n"] for p in kept] == [2, 3, 4]  # 1 skipped history
            assert kept[0]["tags"] == {"kind": "two"}


async def test_a_publish_proxy_result_may_send_the_publication_as_a_delta() -> None:
    async with backend() as app:
        quiet(app)
        app.answers["/publish"] = lambda body: {"result": {"delta": True}}
        config = settings(app)
        config["namespaces"]["chat"]["allowed_delta_types"] = ["fossil"]
        async with (
            running_server(**config) as server,
            ws_connect(server, "/connection/websocket") as alice,
            ws_connect(server, "/connection/websocket") as bob,
        ):
            await command(alice, {"id": 1, "connect": {"token": mint_token(SECRET, "1")}})
            await command(bob, {"id": 1, "connect": {"token": mint_token(SECRET, "2")}})
            await command(alice, {"id": 2, "subscribe": {"channel": "chat:1"}})  # may publish
            sub = {"channel": "chat:1", "delta": "fossil"}
            await command(bob, {"id": 2, "subscribe": sub})
            text = "x" * 200
            for i, word in enumerate((text, text[:-1] + "y"), start=10):
                said = {"id": i, "publish": {"channel": "chat:1", "data": {"t": word}}}
                assert await command(alice, said) == {"id": i, "publish": {}}
            got = [(await push(bob))["pub"] for _ in range(2)]
            assert [p.get("delta", False) for p in got] == [False, True]
            # A delta subscription gets payloads as JSON strings (Centrifugo's JSON protocol).
            assert json.loads(got[0]["data"]) == {"t": text}


async def test_bad_publish_proxy_fields_are_a_temporary_error(caplog) -> None:
    async with backend() as app:
        quiet(app)
        app.answers["/publish"] = lambda body: {"result": {"tags": {"n": 1}}}
        async with (
            running_server(**settings(app)) as server,
            ws_connect(server, "/connection/websocket") as ws,
        ):
            await command(ws, {"id": 1, "connect": {"token": mint_token(SECRET, "1")}})
            await command(ws, {"id": 2, "subscribe": {"channel": "chat:1"}})
            said = await command(ws, {"id": 3, "publish": {"channel": "chat:1", "data": {}}})
            assert said["error"]["code"] == 100
    assert "tags must be a dict of strings" in caplog.text
    caplog.clear()
