"""tidings.Publisher against a real server: sync (as from Django/Celery) and async."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest
import websockets

from tidings import Publisher
from tidings.core.broker import HistoryQuery
from tidings.exceptions import PublishError, Unauthorized
from tidings.testing import TIMEOUT


def ws_url(server, channels: str) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/{channels}"


async def test_sync_publish_from_a_worker_thread(server):
    key = server.config.api_key
    # since=0: the first message arrives whether the subscription starts before or after it.
    async with websockets.connect(ws_url(server, "jobs?since=0")) as ws:

        def django_view(data, event=None):
            with Publisher(server.url, key) as pub:
                return pub.publish("jobs", data, event=event)

        first = await asyncio.to_thread(django_view, {"done": 1})
        one = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        # Having received, the subscription is live: the next one reaches exactly it.
        second = await asyncio.to_thread(django_view, "plain text", "note")
        two = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert first.offset == 1 and second.subscribers == 1
    assert one["data"] == {"done": 1}
    assert (two["data"], two["event"], two["offset"]) == ("plain text", "note", 2)


async def test_async_publish_and_raw_json_text(server):
    async with Publisher(server.url, server.config.api_key) as pub:
        a = await pub.apublish("raw", '{"already": "json"}', raw=True)
        b = await pub.apublish("raw", '{"kept": "as text"}')
    history = await server.app.node.history("raw", HistoryQuery())
    assert [(p.is_json, p.data) for p in history.publications] == [
        (True, b'{"already": "json"}'),
        (False, b'{"kept": "as text"}'),
    ]
    assert b.offset == a.offset + 1 and a.id == f"raw:{a.offset}:{a.epoch}"


async def test_wrong_key_and_bad_channel_raise(server):
    async with Publisher(server.url, "wrong") as pub:
        with pytest.raises(Unauthorized):
            await pub.apublish("news", 1)
    async with Publisher(server.url, server.config.api_key) as pub:
        with pytest.raises(PublishError) as info:
            await pub.apublish("bad channel", 1)
        assert info.value.status == 400


async def test_unreachable_server_raises_publish_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with (
            Publisher(f"http://127.0.0.1:{port}", "key", timeout=2) as pub,
            pytest.raises(PublishError, match="can't reach"),
        ):
            await asyncio.to_thread(pub.publish, "news", 1)
