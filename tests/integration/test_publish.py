"""``/pub/<channel>`` (POST, PUT, GET, DELETE), ``/stats`` and ``/health`` over real HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
from unittest.mock import ANY

import httpx
import pytest
from integration_helpers import (
    AUTH,
    http_client,
    publish,
    raw_connection,
    read_response,
    sse_connect,
    stream_connect,
    subscribed,
    ws_close_code,
    ws_connect,
    ws_json,
)

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py


async def test_post_returns_position(server: Server, client: httpx.AsyncClient) -> None:
    resp = await client.post("/pub/news", json={"text": "hello"}, headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    epoch = body["epoch"]
    assert epoch
    assert body == {
        "channel": "news",
        "offset": 1,
        "epoch": epoch,
        "id": f"news:1:{epoch}",
        "subscribers": 0,
    }
    resp = await client.put("/pub/news", content=b"second", headers=AUTH)
    assert resp.status_code == 200
    assert resp.json()["offset"] == 2
    assert resp.json()["epoch"] == epoch
    # Offsets are per channel.
    other = await publish(server, "ns:other", 1)
    assert other["offset"] == 1


async def test_publish_reaches_every_kind_of_subscriber(server: Server) -> None:
    async with (
        ws_connect(server, "/ws/news") as ws,
        sse_connect(server, "/sse/news") as sse,
        stream_connect(server, "/stream/news") as stream,
        http_client(server) as lp_client,
    ):
        lp = asyncio.create_task(lp_client.get("/lp/news"))
        await subscribed(server, "news", 4)
        result = await publish(server, "news", {"n": 1}, event="update")
        assert result["subscribers"] == 4
        epoch = result["epoch"]
        envelope = {
            "channel": "news",
            "offset": 1,
            "epoch": epoch,
            "event": "update",
            "data": {"n": 1},
        }
        assert await ws_json(ws) == envelope
        event = await sse.next()
        assert event.event == "update"
        assert event.id == f"news:1:{epoch}"
        assert json.loads(event.data) == envelope
        line = await stream.next()
        assert json.loads(line) == envelope
        resp = await asyncio.wait_for(lp, TIMEOUT)
        assert resp.status_code == 200
        assert resp.json() == {"id": f"news:1:{epoch}", "messages": [envelope], "session": ANY}


async def test_text_and_json_payloads(server: Server, client: httpx.AsyncClient) -> None:
    async with (
        ws_connect(server, "/ws/mix") as ws,
        ws_connect(server, "/ws/mix?format=raw") as raw,
    ):
        await subscribed(server, "mix", 2)
        # JSON body kept as JSON.
        await client.post(
            "/pub/mix",
            content=b'{"a": [1, 2]}',
            headers={**AUTH, "Content-Type": "application/json"},
        )
        # Text body sent as a JSON string in the envelope, as is in raw mode.
        await client.post(
            "/pub/mix",
            content="héllo\nworld".encode(),
            headers={**AUTH, "Content-Type": "text/plain"},
        )
        # curl -d sends a form content type: JSON when it parses, else text.
        await client.post(
            "/pub/mix",
            content=b"42",
            headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        )
        await client.post(
            "/pub/mix",
            content=b"not json",
            headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert [(await ws_json(ws))["data"] for _ in range(4)] == [
            {"a": [1, 2]},
            "héllo\nworld",
            42,
            "not json",
        ]
        frames = [await asyncio.wait_for(raw.recv(), TIMEOUT) for _ in range(4)]
        assert frames == ['{"a": [1, 2]}', "héllo\nworld", "42", "not json"]


async def test_event_name_from_query_or_header(server: Server, client: httpx.AsyncClient) -> None:
    async with ws_connect(server, "/ws/ev") as ws:
        await subscribed(server, "ev")
        await client.post("/pub/ev?event=created", json=1, headers=AUTH)
        await client.post("/pub/ev", json=2, headers={**AUTH, "X-Event": "removed"})
        await client.post("/pub/ev", json=3, headers=AUTH)
        got = [await ws_json(ws) for _ in range(3)]
        assert [m.get("event") for m in got] == ["created", "removed", None]
        assert "event" not in got[2]


async def test_publish_rejects_bad_bodies_and_events(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/pub/x", content=b"{oops", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert "JSON" in resp.json()["error"]
    resp = await client.post(
        "/pub/x", content=b"\xff\xfe", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert resp.status_code == 400
    resp = await client.post("/pub/x?event=bad%20name", json=1, headers=AUTH)
    assert resp.status_code == 400
    assert "event" in resp.json()["error"]
    # Nothing was published.
    info = await client.get("/pub/x", headers=AUTH)
    assert info.json()["published"] == 0


async def test_get_channel_info(server: Server, client: httpx.AsyncClient) -> None:
    resp = await client.get("/pub/info", headers=AUTH)
    assert resp.status_code == 200
    assert resp.json() == {
        "channel": "info",
        "subscribers": 0,
        "stored": 0,
        "published": 0,
        "offset": 0,
        "epoch": "",
        "last_event_id": "",
    }
    async with ws_connect(server, "/ws/info"):
        await subscribed(server, "info")
        for i in range(3):
            last = await publish(server, "info", i)
        resp = await client.get("/pub/info", headers=AUTH)
        assert resp.json() == {
            "channel": "info",
            "subscribers": 1,
            "stored": 3,
            "published": 3,
            "offset": 3,
            "epoch": last["epoch"],
            "last_event_id": last["id"],
        }


async def test_delete_closes_subscribers_and_drops_history(
    server: Server, client: httpx.AsyncClient
) -> None:
    await publish(server, "gone", "before")
    async with (
        ws_connect(server, "/ws/gone") as ws,
        ws_connect(server, "/ws/gone,kept") as ws_multi,
        sse_connect(server, "/sse/gone") as sse,
        stream_connect(server, "/stream/gone") as stream,
        http_client(server) as lp_client,
    ):
        lp = asyncio.create_task(lp_client.get("/lp/gone"))
        await subscribed(server, "gone", 5)
        await subscribed(server, "kept", 1)
        resp = await client.delete("/pub/gone", headers=AUTH)
        assert resp.status_code == 200
        assert resp.json() == {"channel": "gone", "deleted": True, "subscribers": 5}

        assert await ws_json(ws) == {"notice": "deleted", "channel": "gone"}
        assert await ws_close_code(ws) == 4404
        # A connection with channels left keeps them.
        assert await ws_json(ws_multi) == {"notice": "deleted", "channel": "gone"}
        event = await sse.next()
        assert event.event == "tidings.deleted"
        assert json.loads(event.data) == {
            "notice": "deleted",
            "channel": "gone",
        }
        assert await sse.wait_end() == []
        assert json.loads(await stream.next()) == {
            "notice": "deleted",
            "channel": "gone",
        }
        assert await stream.wait_end() == []
        answer = await asyncio.wait_for(lp, TIMEOUT)
        assert answer.status_code == 200
        assert answer.json()["notices"] == [{"notice": "deleted", "channel": "gone"}]

        await publish(server, "kept", "still")
        assert (await ws_json(ws_multi))["data"] == "still"

    info = (await client.get("/pub/gone", headers=AUTH)).json()
    assert info["stored"] == 0
    assert info["subscribers"] == 0


async def test_api_key_required(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer test-key"}):
        for method in ("POST", "PUT", "GET", "DELETE"):
            resp = await client.request(method, "/pub/secret", content=b"1", headers=headers)
            assert resp.status_code == 401, (method, headers)
            assert resp.json() == {"error": "missing or wrong API key"}
    resp = await client.get("/pub/secret", headers={"Authorization": "ApiKey test-key"})
    assert resp.status_code == 200
    assert resp.json()["published"] == 0


async def test_no_api_key_configured_refuses_publishing() -> None:
    async with (
        running_server(api_key="") as srv,
        http_client(srv) as c,
    ):
        resp = await c.post("/pub/x", json=1, headers={"X-API-Key": ""})
        assert resp.status_code == 401


async def test_stats(server: Server, client: httpx.AsyncClient) -> None:
    assert (await client.get("/stats")).status_code == 401
    await publish(server, "app:a", 1)
    await publish(server, "app:a", 2)
    await publish(server, "app:b", 3)
    await publish(server, "other", 4)
    async with (
        ws_connect(server, "/ws/app:a"),
        sse_connect(server, "/sse/app:b"),
        stream_connect(server, "/stream/other"),
    ):
        await subscribed(server, "app:a")
        await subscribed(server, "app:b")
        await subscribed(server, "other")
        resp = await client.get("/stats", headers=AUTH)
        assert resp.status_code == 200
        body = resp.json()
        assert body["published"] == 4
        assert body["slow_disconnects"] == 0
        assert body["uptime"] >= 0
        assert body["connections"]["ws"] == 1
        assert body["connections"]["sse"] == 1
        assert body["connections"]["stream"] == 1
        assert body["connections"]["lp"] == 0
        assert body["connections"]["http"] >= 1  # this request's own connection
        names = [c["channel"] for c in body["channels"]]
        assert names == ["app:a", "app:b", "other"]

        one = (await client.get("/stats", params={"channel": "app:a"}, headers=AUTH)).json()
        [info] = one["channels"]
        assert info["channel"] == "app:a"
        assert info["subscribers"] == 1
        assert info["stored"] == 2
        assert info["published"] == 2
        assert info["last_event_id"].startswith("app:a:2:")

        some = (await client.get("/stats", params={"prefix": "app:"}, headers=AUTH)).json()
        assert [c["channel"] for c in some["channels"]] == ["app:a", "app:b"]
        none = (await client.get("/stats", params={"prefix": "zzz"}, headers=AUTH)).json()
        assert none["channels"] == []

    bad = await client.get("/stats", params={"channel": "bad channel"}, headers=AUTH)
    assert bad.status_code == 400
    wrong = await client.post("/stats", headers=AUTH)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET"


async def test_stats_open_and_health() -> None:
    async with (
        running_server(stats_open=True) as srv,
        http_client(srv) as c,
    ):
        resp = await c.get("/stats")
        assert resp.status_code == 200
        assert resp.json()["channels"] == []
        health = await c.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"


async def test_keep_alive_serves_several_requests(server: Server) -> None:
    async with http_client(server) as c:
        for i in range(5):
            resp = await c.post("/pub/ka", json=i, headers=AUTH)
            assert resp.json()["offset"] == i + 1
        # One connection served them all (the stats count this one HTTP connection).
        stats = (await c.get("/stats", headers=AUTH)).json()
        assert stats["connections"]["http"] == 1


async def test_ws_subscriber_counts_in_publish_result(server: Server) -> None:
    async with ws_connect(server, "/ws/count"), ws_connect(server, "/ws/count,x"):
        await subscribed(server, "count", 2)
        assert (await publish(server, "count", 1))["subscribers"] == 2


async def test_head_and_wrong_method_on_health(server: Server) -> None:
    async with raw_connection(server) as (reader, writer):
        # HEAD: the GET's headers, no content, and the connection stays usable.
        writer.write(
            b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Length: " in head
        get = await read_response(reader)
        assert get.status == 200
        assert get.json()["status"] == "ok"
        # Even an error answer to HEAD has no content.
        writer.write(
            b"HEAD /stats HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 401 ")
        assert (await read_response(reader)).status == 200
    async with http_client(server) as c:
        resp = await c.post("/health")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, HEAD"


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    body = b'{"n": %d}'
    requests = b"".join(
        b"POST /pub/pipe HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body % i), body % i)
        for i in range(10)
    )
    async with raw_connection(server) as (reader, writer):
        writer.write(requests + b"GET /pub/pipe HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n\r\n")
        offsets = [(await read_response(reader)).json()["offset"] for _ in range(10)]
        assert offsets == list(range(1, 11))
        info = await read_response(reader)
        assert info.json()["stored"] == 10


async def test_demo_page() -> None:
    async with running_server(demo=True, api_key="demo-key") as srv, http_client(srv) as c:
        resp = await c.get("/")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/html; charset=utf-8"
        assert '"demo-key"' in resp.text
        assert "{{API_KEY}}" not in resp.text


async def test_expect_100_continue(server: Server) -> None:
    async with raw_connection(server) as (reader, writer):
        writer.write(
            b"POST /pub/cont HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"42")
        resp = await read_response(reader)
        assert resp.status == 200
        assert resp.json()["offset"] == 1


CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="needs curl")
async def test_the_readme_story_with_curl(server: Server) -> None:
    """``curl -N .../stream/news`` prints what ``curl -X POST .../pub/news`` publishes
    (a body over 1 KiB, for which curl asks for 100 Continue and waits)."""
    assert CURL is not None
    reader = await asyncio.create_subprocess_exec(
        CURL, "-sN", f"{server.url}/stream/news?format=raw", stdout=asyncio.subprocess.PIPE
    )
    try:
        await subscribed(server, "news")
        text = "x" * 2000
        publisher = await asyncio.create_subprocess_exec(
            CURL,
            "-s",
            "--expect100-timeout",
            "60",
            "-X",
            "POST",
            f"{server.url}/pub/news",
            "-H",
            "X-API-Key: test-key",
            "-d",
            json.dumps({"text": text}),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(publisher.communicate(), TIMEOUT)
        assert publisher.returncode == 0
        assert json.loads(out)["offset"] == 1
        assert reader.stdout is not None
        line = await asyncio.wait_for(reader.stdout.readline(), TIMEOUT)
        assert json.loads(line) == {"text": text}
    finally:
        reader.kill()
        await reader.wait()


@pytest.mark.parametrize("key", ['"order-42"', "order-42"])
async def test_idempotency_key_publishes_once(
    server: Server, client: httpx.AsyncClient, key: str
) -> None:
    headers = {**AUTH, "Idempotency-Key": key}
    first = await client.post("/pub/keyed", json={"n": 1}, headers=headers)
    again = await client.post("/pub/keyed", json={"n": 1}, headers=headers)
    other = await client.post("/pub/elsewhere", json={"n": 1}, headers=headers)
    assert first.status_code == again.status_code == other.status_code == 200
    assert "duplicate" not in first.json()
    assert again.json() == {**first.json(), "duplicate": True}
    assert other.json()["offset"] == 1 and "duplicate" not in other.json()  # per channel
    info = (await client.get("/pub/keyed", headers=AUTH)).json()
    assert info["stored"] == 1


@pytest.mark.parametrize("key", ['""', "a b", "x" * 129, '"unterminated', 'in"side'])
async def test_a_malformed_idempotency_key_is_400(
    server: Server, client: httpx.AsyncClient, key: str
) -> None:
    resp = await client.post("/pub/keyed", json=1, headers={**AUTH, "Idempotency-Key": key})
    assert resp.status_code == 400 and "Idempotency-Key" in resp.json()["error"]
    assert (await client.get("/pub/keyed", headers=AUTH)).json()["stored"] == 0
