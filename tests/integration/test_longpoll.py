"""``/lp/<channels>``: immediate answers, holding, timeouts, batching and chained polls."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from integration_helpers import http_client, publish, raw_connection, subscribed, until

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py


def etag_id(resp: httpx.Response) -> str:
    etag = resp.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert etag[1:-1] == resp.json()["id"]
    return str(etag[1:-1])


def without_session(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()
    del body["session"]
    return body


async def test_holds_until_a_message(server: Server, client: httpx.AsyncClient) -> None:
    poll = asyncio.create_task(client.get("/lp/wait"))
    await subscribed(server, "wait")
    assert not poll.done()
    first = await publish(server, "wait", {"n": 1}, event="ev")
    resp = await asyncio.wait_for(poll, TIMEOUT)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["cache-control"] == "no-store"
    assert "x-tidings-gap" not in resp.headers
    epoch = first["epoch"]
    body = resp.json()
    assert isinstance(body.pop("session"), str)  # to come back with (test_longpoll_send)
    assert body == {
        "id": f"wait:1:{epoch}",
        "messages": [
            {"channel": "wait", "offset": 1, "epoch": epoch, "event": "ev", "data": {"n": 1}}
        ],
    }
    assert etag_id(resp) == first["id"]
    # Answered: the poll left the channel.
    assert server.app.node.hub.count("wait") == 0


async def test_raw_mode(server: Server, client: httpx.AsyncClient) -> None:
    poll = asyncio.create_task(client.get("/lp/raw", params={"format": "raw"}))
    await subscribed(server, "raw")
    await publish(server, "raw", "text", text=True)
    resp = await asyncio.wait_for(poll, TIMEOUT)
    assert resp.json()["messages"] == ["text"]


async def test_answers_at_once_with_history_after_position(
    server: Server, client: httpx.AsyncClient
) -> None:
    for i in range(5):
        last = await publish(server, "hist", i)
    resp = await client.get("/lp/hist", params={"since": "2"})
    body = resp.json()
    assert [m["data"] for m in body["messages"]] == [2, 3, 4]
    assert body["id"] == last["id"]
    # Nothing newer: the next poll with that id waits (here: times out below).


async def test_times_out_with_empty_answer_keeping_position() -> None:
    async with running_server(longpoll_timeout=0.05) as srv, http_client(srv) as c:
        first = await publish(srv, "idle", 1)
        resp = await c.get("/lp/idle")
        assert resp.status_code == 200
        # Without a position the poll starts at the top of the stream: nothing to send.
        assert without_session(resp) == {"id": first["id"], "messages": []}
        again = await c.get("/lp/idle", headers={"If-None-Match": resp.headers["etag"]})
        assert without_session(again) == {"id": first["id"], "messages": []}
        # A channel with no stream yet has position 0, in the epoch its first message gets.
        empty = await c.get("/lp/nothing")
        body = empty.json()
        assert body["messages"] == [] and body["id"].startswith("nothing:0:")
        assert (await publish(srv, "nothing", 1))["id"] == "nothing:1:" + body["id"][10:]


async def test_batches_publications_of_one_loop_iteration(
    server: Server, client: httpx.AsyncClient
) -> None:
    poll = asyncio.create_task(client.get("/lp/batch"))
    await subscribed(server, "batch")
    # Publish three in one go through the node (same loop iteration): one response.
    for i in range(3):
        await server.app.node.publish("batch", str(i).encode())
    resp = await asyncio.wait_for(poll, TIMEOUT)
    assert [m["data"] for m in resp.json()["messages"]] == [0, 1, 2]


async def test_several_channels(server: Server, client: httpx.AsyncClient) -> None:
    ea = (await publish(server, "la", "a1", text=True))["epoch"]
    poll = asyncio.create_task(client.get("/lp/la,lb"))
    await subscribed(server, "lb")
    eb = (await publish(server, "lb", "b1", text=True))["epoch"]
    resp = await asyncio.wait_for(poll, TIMEOUT)
    body = resp.json()
    assert body["id"] == f"la:1:{ea},lb:1:{eb}"
    assert [m["data"] for m in body["messages"]] == ["b1"]
    # Resume both channels with the id: each gets only what is new.
    await publish(server, "la", "a2", text=True)
    await publish(server, "lb", "b2", text=True)
    resp = await client.get("/lp/la,lb", headers={"If-None-Match": resp.headers["etag"]})
    body = resp.json()
    assert sorted(m["data"] for m in body["messages"]) == ["a2", "b2"]
    assert body["id"] == f"la:2:{ea},lb:2:{eb}"


async def test_chained_polls_lose_nothing(server: Server) -> None:
    """A publisher runs flat out while a client polls in a chain with the returned ETag:
    every message arrives once, in order."""
    total = 200
    received: list[Any] = []

    async def poller() -> None:
        async with http_client(server) as c:
            etag = None
            while len(received) < total:
                headers = {"If-None-Match": etag} if etag else {}
                resp = await c.get("/lp/chain", params={"format": "raw"}, headers=headers)
                assert resp.status_code == 200
                assert "x-tidings-gap" not in resp.headers
                received.extend(resp.json()["messages"])
                etag = resp.headers["etag"]

    async def publisher() -> None:
        async with http_client(server) as c:
            for i in range(total):
                resp = await c.post("/pub/chain", json=i, headers={"X-API-Key": "test-key"})
                assert resp.status_code == 200

    await publish(server, "chain", "before")  # older than the first poll: not wanted
    poll_task = asyncio.create_task(poller())
    await subscribed(server, "chain")
    await asyncio.wait_for(asyncio.gather(publisher(), poll_task), TIMEOUT * 3)
    assert received == list(range(total))


async def test_chain_with_query_id_and_last_event_id_header(
    server: Server, client: httpx.AsyncClient
) -> None:
    first = await publish(server, "q", 1)
    await publish(server, "q", 2)
    resp = await client.get("/lp/q", params={"last_event_id": first["id"]})
    assert [m["data"] for m in resp.json()["messages"]] == [2]
    resp2 = await client.get("/lp/q", params={"last": "2"})
    assert [m["data"] for m in resp2.json()["messages"]] == [1, 2]
    resp3 = await client.get("/lp/q", headers={"Last-Event-ID": first["id"]})
    assert [m["data"] for m in resp3.json()["messages"]] == [2]


async def test_client_going_away_while_waiting(server: Server) -> None:
    async with raw_connection(server) as (_, writer):
        writer.write(b"GET /lp/away HTTP/1.1\r\nHost: x\r\n\r\n")
        await subscribed(server, "away")
        writer.transport.abort()
        await until(lambda: server.app.node.hub.count("away") == 0, "long-poll left the channel")
    assert (await publish(server, "away", 1))["subscribers"] == 0


async def test_keep_alive_between_polls() -> None:
    async with running_server(longpoll_timeout=0.02) as srv, http_client(srv) as c:
        for _ in range(3):
            resp = await c.get("/lp/ka")
            assert resp.status_code == 200
        stats = (await c.get("/stats", headers={"X-API-Key": "test-key"})).json()
        assert stats["connections"]["http"] + stats["connections"]["lp"] == 1
