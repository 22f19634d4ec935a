"""Resume after a drop on every transport: nothing missed, nothing twice, in order; a gap
notice whenever history can't fill the gap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from integration_helpers import (
    AUTH,
    http_client,
    publish,
    sse_connect,
    stream_connect,
    subscribed,
    ws_connect,
    ws_json,
)

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py

STREAMING = ["ws", "sse", "stream"]


class Sub:
    """One subscriber connection of any streaming kind; ``next()`` gives parsed JSON."""

    def __init__(self, kind: str, source: Any) -> None:
        self.kind = kind
        self.source = source

    async def next(self) -> dict[str, Any]:
        if self.kind == "ws":
            message: dict[str, Any] = await ws_json(self.source)
            return message
        item = await self.source.next()
        if self.kind == "sse":
            data = json.loads(item.data)
            if "notice" in data:
                assert item.event == f"tidings.{data['notice']}"
            return dict(data)
        return dict(json.loads(item))

    async def take(self, n: int) -> list[dict[str, Any]]:
        return [await self.next() for _ in range(n)]


@asynccontextmanager
async def subscribe(
    kind: str, server: Server, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Sub]:
    """``path`` is ``<channels>?<query>``."""
    if kind == "ws":
        async with ws_connect(server, f"/ws/{path}", additional_headers=headers) as ws:
            yield Sub(kind, ws)
    elif kind == "sse":
        async with sse_connect(server, f"/sse/{path}", headers) as sse:
            yield Sub(kind, sse)
    else:
        async with stream_connect(server, f"/stream/{path}", headers) as stream:
            yield Sub(kind, stream)


def position(message: dict[str, Any]) -> str:
    return f"{message['channel']}:{message['offset']}:{message['epoch']}"


def resume_ways(
    kind: str, ident: str, channel: str, offset: int
) -> list[tuple[str, dict[str, str]]]:
    """Every way a client of ``kind`` can give its position: (query, headers)."""
    ways = [
        (f"last_event_id={ident}", {}),
        (f"since={offset}", {}),
        (f"since={channel}:{offset}", {}),
    ]
    ways.append(("", {"Last-Event-ID": ident}))
    if kind != "sse":  # browsers' EventSource sends only Last-Event-ID
        ways.append(("", {"If-None-Match": f'"{ident}"'}))
    return ways


@pytest.mark.parametrize("kind", STREAMING)
async def test_resume_after_drop_gets_exactly_what_was_missed(kind: str, server: Server) -> None:
    async with subscribe(kind, server, "news") as sub:
        await subscribed(server, "news")
        for i in range(3):
            await publish(server, "news", i)
        seen = await sub.take(3)
        assert [m["data"] for m in seen] == [0, 1, 2]
    last = seen[-1]
    # One round per way of giving the position, each resuming where the last one stopped.
    for round_ in range(len(resume_ways(kind, "", "", 0))):
        missed_data = [f"{round_}-{i}" for i in range(3)]  # published while away
        for data in missed_data:
            await publish(server, "news", data)
        query, headers = resume_ways(kind, position(last), "news", last["offset"])[round_]
        async with subscribe(kind, server, f"news?{query}", headers) as sub:
            missed = await sub.take(3)
            assert [m["data"] for m in missed] == missed_data, (query, headers)
            assert [m["offset"] for m in missed] == [last["offset"] + i for i in (1, 2, 3)]
            # Then live messages, with no repeat of the replayed ones.
            await subscribed(server, "news")
            live = await publish(server, "news", "live")
            nxt = await sub.next()
            assert (nxt["data"], nxt["offset"]) == ("live", live["offset"]), (query, headers)
        last = nxt


@pytest.mark.parametrize("kind", STREAMING)
async def test_resume_while_publishing_never_loses_or_repeats(kind: str, server: Server) -> None:
    """The client drops and comes back while a publisher runs flat out: the catch-up from
    history and the live stream join without a hole or a repeat."""
    total = 300
    got: list[int] = []
    started = asyncio.Event()

    async def publisher() -> None:
        async with http_client(server) as c:
            for i in range(total):
                resp = await c.post("/pub/flow", json=i, headers=AUTH)
                assert resp.status_code == 200
                if i == 20:
                    started.set()

    task = asyncio.create_task(publisher())
    try:
        async with subscribe(kind, server, "flow?since=0") as sub:
            while len(got) < 50:
                message = await sub.next()
                got.append(message["data"])
                last = message
        await asyncio.wait_for(started.wait(), TIMEOUT)
        async with subscribe(kind, server, f"flow?last_event_id={position(last)}") as sub:
            while len(got) < total:
                message = await sub.next()
                assert "notice" not in message, message
                got.append(message["data"])
        await asyncio.wait_for(task, TIMEOUT)
    finally:
        task.cancel()
    assert got == list(range(total))


async def test_sse_browser_style_resume_on_several_channels(server: Server) -> None:
    """An EventSource reconnects with the last ``id:`` it saw as Last-Event-ID; on several
    channels that id carries every channel's position."""
    async with subscribe("sse", server, "ra,rb") as sub:
        await subscribed(server, "ra")
        await subscribed(server, "rb")
        await publish(server, "ra", "a1")
        await publish(server, "rb", "b1")
        await sub.take(2)
        last_id = sub.source.last_id
    await publish(server, "rb", "b2")
    await publish(server, "ra", "a2")
    await publish(server, "rb", "b3")
    async with subscribe("sse", server, "ra,rb", {"Last-Event-ID": last_id}) as sub:
        got = await sub.take(3)
        # Replay is per channel (each in order).
        assert sorted((m["channel"], m["data"]) for m in got) == [
            ("ra", "a2"),
            ("rb", "b2"),
            ("rb", "b3"),
        ]
        assert [m["data"] for m in got if m["channel"] == "rb"] == ["b2", "b3"]
        epochs = {m["channel"]: m["epoch"] for m in got}
        assert sub.source.last_id is not None
        assert set(sub.source.last_id.split(",")) == {
            f"ra:2:{epochs['ra']}",
            f"rb:3:{epochs['rb']}",
        }


@pytest.mark.parametrize("kind", STREAMING)
async def test_gap_when_history_is_too_short(kind: str) -> None:
    async with running_server(history_size=3) as srv:
        first = await publish(srv, "short", 1)
        for i in range(2, 11):
            await publish(srv, "short", i)
        async with subscribe(kind, srv, f"short?last_event_id={first['id']}") as sub:
            notice = await sub.next()
            assert notice == {
                "notice": "gap",
                "channel": "short",
                "reason": "history",
                "expected": 2,
                "resumed_from": 8,
                "epoch": first["epoch"],
            }
            assert [m["data"] for m in await sub.take(3)] == [8, 9, 10]
            await subscribed(srv, "short")
            await publish(srv, "short", 11)
            assert (await sub.next())["data"] == 11


@pytest.mark.parametrize("kind", STREAMING)
async def test_gap_after_history_was_deleted(kind: str, server: Server) -> None:
    first = await publish(server, "wiped", 1)
    await publish(server, "wiped", 2)
    async with http_client(server) as c:
        assert (await c.delete("/pub/wiped", headers=AUTH)).status_code == 200
    async with subscribe(kind, server, f"wiped?last_event_id={first['id']}") as sub:
        notice = await sub.next()
        assert notice["notice"] == "gap"
        # Deleting drops the stream: the next one is a new epoch (broker contract, point 2).
        assert notice["reason"] == "epoch" and notice["epoch"] != first["epoch"]
        assert notice["expected"] == 2
        await subscribed(server, "wiped")
        after = await publish(server, "wiped", 3)
        assert notice["resumed_from"] == after["offset"]
        assert (await sub.next())["data"] == 3


@pytest.mark.parametrize("kind", STREAMING)
async def test_gap_on_wrong_epoch_replays_what_history_holds(kind: str, server: Server) -> None:
    pub = await publish(server, "ep", 1)
    await publish(server, "ep", 2)
    async with subscribe(kind, server, "ep?last_event_id=ep:1:older-epoch") as sub:
        notice = await sub.next()
        assert notice == {
            "notice": "gap",
            "channel": "ep",
            "reason": "epoch",
            "expected": 2,
            "resumed_from": 1,
            "epoch": pub["epoch"],
        }
        assert [m["data"] for m in await sub.take(2)] == [1, 2]


@pytest.mark.parametrize("kind", STREAMING)
async def test_gap_on_position_beyond_the_stream(kind: str, server: Server) -> None:
    await publish(server, "ahead", 1)
    async with subscribe(kind, server, "ahead?since=99") as sub:
        notice = await sub.next()
        assert notice["notice"] == "gap"
        assert notice["reason"] == "position"
        assert notice["expected"] == 100
        await subscribed(server, "ahead")
        await publish(server, "ahead", 2)
        assert (await sub.next())["data"] == 2


@pytest.mark.parametrize("kind", STREAMING)
async def test_last_n(kind: str, server: Server) -> None:
    for i in range(5):
        await publish(server, "lastn", i)
    async with subscribe(kind, server, "lastn?last=2") as sub:
        assert [m["data"] for m in await sub.take(2)] == [3, 4]
        await subscribed(server, "lastn")
        await publish(server, "lastn", 5)
        assert (await sub.next())["data"] == 5
    # More than history holds: everything there is, no gap (nothing was asked to resume).
    async with subscribe(kind, server, "lastn?last=50") as sub:
        assert [m["data"] for m in await sub.take(6)] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("kind", STREAMING)
async def test_resume_one_channel_of_several(kind: str, server: Server) -> None:
    """``since=ch:offset`` resumes the named channel; the others start live."""
    await publish(server, "m1", "old1")
    await publish(server, "m1", "old2")
    await publish(server, "m2", "not replayed")
    async with subscribe(kind, server, "m1,m2?since=m1:1") as sub:
        assert (await sub.next())["data"] == "old2"
        await subscribed(server, "m2")
        await subscribed(server, "m1")
        await publish(server, "m2", "live")
        assert (await sub.next())["data"] == "live"


async def test_longpoll_gap_header_and_notices(server: Server) -> None:
    async with running_server(history_size=2) as srv, http_client(srv) as c:
        first = await publish(srv, "lpgap", 1)
        for i in range(2, 6):
            await publish(srv, "lpgap", i)
        resp = await c.get("/lp/lpgap", headers={"If-None-Match": f'"{first["id"]}"'})
        assert resp.headers["x-tidings-gap"] == "1"
        body = resp.json()
        assert body["notices"] == [
            {
                "notice": "gap",
                "channel": "lpgap",
                "reason": "history",
                "expected": 2,
                "resumed_from": 4,
                "epoch": first["epoch"],
            }
        ]
        assert [m["data"] for m in body["messages"]] == [4, 5]
        assert body["id"] == f"lpgap:5:{first['epoch']}"


async def test_longpoll_gap_on_wrong_epoch(server: Server, client: httpx.AsyncClient) -> None:
    await publish(server, "lpe", 1)
    resp = await client.get("/lp/lpe", params={"last_event_id": "lpe:1:gone"})
    assert resp.headers["x-tidings-gap"] == "1"
    body = resp.json()
    assert body["notices"][0]["reason"] == "epoch"
    assert [m["data"] for m in body["messages"]] == [1]


async def test_longpoll_gap_after_delete(server: Server, client: httpx.AsyncClient) -> None:
    first = await publish(server, "lpd", 1)
    await publish(server, "lpd", 2)
    assert (await client.delete("/pub/lpd", headers=AUTH)).status_code == 200
    resp = await client.get("/lp/lpd", params={"last_event_id": first["id"]})
    assert resp.headers["x-tidings-gap"] == "1"
    body = resp.json()
    assert body["notices"][0]["reason"] == "epoch"
    assert body["messages"] == []
    # The id points at the top of the new stream so the next poll gets what comes next.
    new_epoch = body["notices"][0]["epoch"]
    assert new_epoch != first["epoch"] and body["id"] == f"lpd:0:{new_epoch}"
    await publish(server, "lpd", 3)
    resp = await client.get("/lp/lpd", headers={"If-None-Match": resp.headers["etag"]})
    assert [m["data"] for m in resp.json()["messages"]] == [3]


async def test_resume_across_a_broker_restart_reports_epoch() -> None:
    """A restarted in-memory server has a new epoch: the old position can't be honoured."""
    async with running_server() as srv:
        old = await publish(srv, "restart", 1)
    async with (
        running_server() as srv,
        subscribe("ws", srv, f"restart?last_event_id={old['id']}") as sub,
    ):
        notice = await sub.next()
        assert notice["notice"] == "gap"
        assert notice["reason"] == "epoch"
        assert notice["epoch"] != old["epoch"]
