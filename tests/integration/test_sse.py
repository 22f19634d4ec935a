"""``/sse/<channels>``: EventSource framing, ids, event names, multi-line data, heartbeats."""

from __future__ import annotations

import json

import pytest
from integration_helpers import chunks_connect, http_client, publish, sse_connect, subscribed

from tidings.server import Server
from tidings.testing import running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py


async def test_headers_retry_and_first_comment(server: Server) -> None:
    async with sse_connect(server, "/sse/h") as sse:
        headers = sse.response.headers
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "no-cache" in headers["cache-control"]
        assert headers["x-accel-buffering"] == "no"
        assert "content-length" not in headers
        await subscribed(server, "h")
        await publish(server, "h", 1)
        await sse.next()
        assert sse.retry == [str(server.config.sse_retry_ms)]
        assert sse.comments[0] == "ok"


async def test_envelope_event_and_id(server: Server) -> None:
    async with (
        sse_connect(server, "/sse/news") as sse,
        sse_connect(server, "/sse/news?format=raw") as raw,
    ):
        await subscribed(server, "news", 2)
        first = await publish(server, "news", {"a": 1})
        second = await publish(server, "news", {"b": 2}, event="update")
        epoch = first["epoch"]
        one, two = await sse.take(2)
        assert one.event == "message"
        assert one.id == first["id"] == f"news:1:{epoch}"
        assert json.loads(one.data) == {
            "channel": "news",
            "offset": 1,
            "epoch": epoch,
            "data": {"a": 1},
        }
        assert two.event == "update"
        assert two.id == second["id"]
        assert json.loads(two.data)["event"] == "update"
        raw_one, raw_two = await raw.take(2)
        assert json.loads(raw_one.data) == {"a": 1}
        assert raw_two.event == "update"
        assert raw_two.id == second["id"]


async def test_multiline_text_arrives_intact(server: Server) -> None:
    payloads = [
        "line one\nline two\n\nline four",
        "crlf\r\nline",
        "cr\rline",
        "trailing newline\n",
        "\nleading newline",
        "data: looks like a field\nid: not an id\nevent: not an event",
        "ünïcødé ✓",
    ]
    async with (
        sse_connect(server, "/sse/text?format=raw") as raw,
        sse_connect(server, "/sse/text") as env,
    ):
        await subscribed(server, "text", 2)
        for text in payloads:
            await publish(server, "text", text, text=True)
        got = [e.data for e in await raw.take(len(payloads))]
        # SSE normalises every line break to LF (WHATWG HTML §9.2.5); nothing else changes.
        expected = [t.replace("\r\n", "\n").replace("\r", "\n") for t in payloads]
        assert got == expected
        envelopes = [json.loads(e.data) for e in await env.take(len(payloads))]
        # The envelope carries the exact text, line breaks included.
        assert [e["data"] for e in envelopes] == payloads


async def test_multiline_json_payload(server: Server) -> None:
    async with sse_connect(server, "/sse/pretty?format=raw") as raw:
        await subscribed(server, "pretty")
        async with http_client(server) as c:
            body = b'{\n  "a": [\n    1,\n    2\n  ]\n}'
            resp = await c.post(
                "/pub/pretty",
                content=body,
                headers={"X-API-Key": "test-key", "Content-Type": "application/json"},
            )
            assert resp.status_code == 200
        event = await raw.next()
        assert json.loads(event.data) == {"a": [1, 2]}


async def test_several_channels_id_lists_every_position(server: Server) -> None:
    ea = (await publish(server, "a", "a1", text=True))["epoch"]  # each stream has its epoch
    async with sse_connect(server, "/sse/a,b") as sse:
        await subscribed(server, "a")
        await subscribed(server, "b")
        eb = (await publish(server, "b", "b1", text=True))["epoch"]
        await publish(server, "a", "a2", text=True)
        await publish(server, "b", "b2", text=True, event="ev")
        e1, e2, e3 = await sse.take(3)
        assert (json.loads(e1.data)["channel"], e1.id) == ("b", f"a:1:{ea},b:1:{eb}")
        assert (json.loads(e2.data)["channel"], e2.id) == ("a", f"a:2:{ea},b:1:{eb}")
        assert (json.loads(e3.data)["channel"], e3.id) == ("b", f"a:2:{ea},b:2:{eb}")
        assert e3.event == "ev"


@pytest.mark.parametrize("channels", ["a,b", "a"])
async def test_crafted_epoch_is_refused_not_written_into_the_stream(
    server: Server, channels: str
) -> None:
    """An epoch is copied into every ``id:`` line of a several-channel stream: one holding
    CR/LF would add fields and events to the requester's stream (WHATWG HTML §9.2.5), here
    an early dispatch, an extra event and an ``id`` that resets the resume position."""
    evil = "a:0:x\n\ndata\ndata\n\nid"
    async with (
        http_client(server) as c,
        c.stream("GET", f"/sse/{channels}", params={"last_event_id": evil}) as resp,
    ):
        assert resp.status_code == 400
        body = json.loads(await resp.aread())
        assert body["error"].startswith("bad position")


async def test_several_channels_without_history_yet(server: Server) -> None:
    async with sse_connect(server, "/sse/x,y?format=raw") as sse:
        await subscribed(server, "x")
        await subscribed(server, "y")
        first = await publish(server, "y", "y1", text=True)
        event = await sse.next()
        assert event.data == "y1"
        # x has no stream yet: its position is offset 0, which resumes from the start.
        assert event.id == f"x:0:,y:1:{first['epoch']}"


async def test_heartbeat_comments() -> None:
    # The shortest interval allowed (a second).
    async with running_server(ping_interval=1) as srv, chunks_connect(srv, "/sse/beat") as sse:
        received = b""
        while received.count(b":\n\n") < 2:
            received += await sse.next()
        assert received.startswith(b"retry: ")
        assert b":ok\n\n" in received


async def test_sse_is_close_delimited(server: Server) -> None:
    async with sse_connect(server, "/sse/cd") as sse:
        assert sse.response.headers.get("connection") == "close"
        assert "transfer-encoding" not in sse.response.headers
