"""tidings.Publisher against a real server: sync (as from Django/Celery) and async."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import uvloop
import websockets
from integration_helpers import API_KEY as KEY
from integration_helpers import on_server_loop, server_in_thread

from tidings import Publisher
from tidings.core.broker import HistoryQuery
from tidings.exceptions import PublishError, Unauthorized
from tidings.server import Server
from tidings.testing import TIMEOUT

SRC = Path(__file__).resolve().parents[2] / "src"


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


# One Publisher, many event loops (the Django async view under runserver: a loop per request)


def http_connections(server: Server) -> int:
    return int(on_server_loop(server, lambda: server.app.connection_counts()["http"]))


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def stored(server: Server, channel: str) -> list[bytes]:
    async def read() -> list[bytes]:
        history = await server.app.node.history(channel, HistoryQuery())
        return [p.data for p in history.publications]

    return list(on_server_loop(server, read))


def test_apublish_across_asyncio_run_calls() -> None:
    # Regression: the second asyncio.run raised "RuntimeError: Event loop is closed" from
    # a connection pool of the first loop, after the server had published.
    with server_in_thread(api_key=KEY) as server:
        pub = Publisher(server.url, KEY)
        first = asyncio.run(pub.apublish("runs", 1))
        second = asyncio.run(pub.apublish("runs", 2))
        third = uvloop.run(pub.apublish("runs", 3))
        with asyncio.Runner() as runner:
            fourth = runner.run(pub.apublish("runs", 4))
            fifth = runner.run(pub.apublish("runs", 5))  # the same loop: its pool again
        assert [r.offset for r in (first, second, third, fourth, fifth)] == [1, 2, 3, 4, 5]
        assert stored(server, "runs") == [b"1", b"2", b"3", b"4", b"5"]
        # Each loop's pool was closed as its loop shut down: no connection is left open.
        wait_for(lambda: http_connections(server) == 0, "the pools' connections to close")
        pub.close()


def test_apublish_from_loops_in_several_threads() -> None:
    with server_in_thread(api_key=KEY) as server, Publisher(server.url, KEY) as pub:

        async def several() -> list[int]:
            return [(await pub.apublish("threads", n)).offset for n in range(5)]

        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda _: asyncio.run(several()), range(4)))
        assert sorted(o for run in runs for o in run) == list(range(1, 21))
        assert all(run == sorted(run) for run in runs)


# Encoding


async def test_model_values_are_encoded(server: Server) -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    data = {
        "price": Decimal("19.990"),
        "at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "naive": datetime.datetime(2026, 1, 2, 3, 4, 5, 600000),
        "day": datetime.date(2026, 1, 2),
        "time": datetime.time(3, 4, 5),
        "id": ident,
        7: "a key that is not a string",
    }
    async with Publisher(server.url, KEY) as pub:
        await pub.apublish("models", data)
        with pytest.raises(TypeError, match="not JSON serializable"):
            await pub.apublish("models", {"what": object()})
    [payload] = (await server.app.node.history("models", HistoryQuery())).publications
    assert orjson.loads(payload.data) == {
        "price": "19.990",
        "at": "2026-01-02T03:04:05Z",
        "naive": "2026-01-02T03:04:05.600000",
        "day": "2026-01-02",
        "time": "03:04:05",
        "id": str(ident),
        "7": "a key that is not a string",
    }


async def test_a_custom_json_encoder(server: Server) -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    def encoder(value: object) -> str:
        return json.dumps(value, default=lambda v: f"{v.cents / 100:.2f} EUR")

    async with Publisher(server.url, KEY, json_encoder=encoder) as pub:
        await pub.apublish("money", {"total": Money(1250)})
    [payload] = (await server.app.node.history("money", HistoryQuery())).publications
    assert (payload.is_json, orjson.loads(payload.data)) == (True, {"total": "12.50 EUR"})


# Retries, safe by idempotency keys; timeouts; errors


async def read_message(reader: asyncio.StreamReader) -> bytes | None:
    """One HTTP message with a Content-Length body, or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


class FaultyProxy:
    """Between a Publisher and the server: each request meets the next fault of ``script``
    — ``lose`` (forwarded, the answer dropped with the connection), ``503``, ``hang`` —
    and is forwarded once the script is done."""

    def __init__(self, server: Server, script: list[str]) -> None:
        self.upstream = server.port
        self.script = script
        self.requests: list[bytes] = []
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def keys(self) -> list[str]:
        found = [re.search(rb"(?i)idempotency-key: (\S+)", r) for r in self.requests]
        return [m.group(1).decode() if m else "" for m in found]

    async def __aenter__(self) -> str:
        self.listener = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.listener.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.listener.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while (request := await read_message(reader)) is not None:
                self.requests.append(request)
                fault = self.script.pop(0) if self.script else ""
                if fault == "hang":
                    await asyncio.Event().wait()
                if fault == "503":
                    body = b'{"error": "try again"}'
                    head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Length: {len(body)}"
                    writer.write(head.encode() + b"\r\n\r\n" + body)
                    continue
                answer = await self.forward(request)
                if fault == "lose":
                    break
                writer.write(answer)
        finally:
            writer.close()
            self.tasks.discard(task)

    async def forward(self, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        try:
            writer.write(request)
            answer = await asyncio.wait_for(read_message(reader), TIMEOUT)
            assert answer is not None
            return answer
        finally:
            writer.close()


async def test_a_lost_answer_is_retried_and_published_once(server: Server) -> None:
    proxy = FaultyProxy(server, ["lose"])
    async with proxy as url, Publisher(url, KEY, backoff=0.01) as pub:
        result = await pub.apublish("once", {"n": 1})
    # The first attempt published; the retry, with the same key, got its position back.
    assert (result.offset, result.duplicate) == (1, True)
    assert len(proxy.requests) == 2 and proxy.keys[0] == proxy.keys[1] != ""
    history = await server.app.node.history("once", HistoryQuery())
    assert [p.data for p in history.publications] == [b'{"n":1}']


async def test_without_a_key_nothing_is_retried(server: Server) -> None:
    proxy = FaultyProxy(server, ["lose"])
    async with proxy as url, Publisher(url, KEY, backoff=0.01) as pub:
        with pytest.raises(PublishError) as info:
            await pub.apublish("unkeyed", 1, idempotency_key="")
    assert (info.value.status, info.value.retryable) == (0, True)
    assert len(proxy.requests) == 1 and proxy.keys == [""]
    # Published although the answer was lost: a blind retry would have published twice.
    history = await server.app.node.history("unkeyed", HistoryQuery())
    assert len(history.publications) == 1


async def test_unavailable_is_retried_with_the_given_key(server: Server) -> None:
    proxy = FaultyProxy(server, ["503", "503"])
    async with proxy as url, Publisher(url, KEY, backoff=0.01) as pub:
        result = await asyncio.to_thread(pub.publish, "busy", 1, idempotency_key="order-42")
    assert (result.offset, result.duplicate) == (1, False)
    assert proxy.keys == ["order-42"] * 3


async def test_retries_run_out(server: Server) -> None:
    proxy = FaultyProxy(server, ["503"] * 5)
    async with proxy as url, Publisher(url, KEY, retries=2, backoff=0.01) as pub:
        with pytest.raises(PublishError) as info:
            await pub.apublish("busy", 1)
    assert (info.value.status, info.value.reason, info.value.retryable) == (503, "try again", True)
    assert str(info.value) == "publish refused: 503 try again"
    assert len(proxy.requests) == 3


async def test_a_refusal_is_not_retried(server: Server) -> None:
    proxy = FaultyProxy(server, [])
    async with proxy as url, Publisher(url, KEY, backoff=0.01) as pub:
        with pytest.raises(PublishError) as info:
            await pub.apublish("bad channel", 1)
    assert (info.value.status, info.value.retryable) == (400, False)
    assert info.value.reason.startswith("bad channel name")
    assert len(proxy.requests) == 1


async def test_each_attempt_times_out(server: Server) -> None:
    proxy = FaultyProxy(server, ["hang", "hang"])
    async with proxy as url, Publisher(url, KEY, timeout=0.3, retries=1, backoff=0.01) as pub:
        with pytest.raises(PublishError) as info:
            await pub.apublish("slow", 1)
    assert str(info.value) == f"can't reach {url}: no answer within 0.3 s"
    assert (info.value.status, info.value.retryable) == (0, True)
    assert len(proxy.requests) == 2


async def test_unauthorized_carries_status_and_reason(server: Server) -> None:
    async with Publisher(server.url, "wrong", backoff=0.01) as pub:
        with pytest.raises(Unauthorized) as info:
            await pub.apublish("news", 1)
    assert (info.value.status, info.value.reason) == (401, "missing or wrong API key")


def test_a_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(
        ValueError, match="must start with http://, https://, redis:// or rediss://"
    ):
        Publisher("ftp://127.0.0.1", KEY)


def test_the_publisher_needs_none_of_the_server_dependencies() -> None:
    # As installed with only httpx and orjson: importing any server dependency fails.
    script = textwrap.dedent(
        """
        import sys

        BLOCKED = ("httptools", "websockets", "uvloop", "jwt", "cryptography", "google")

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is not installed")

        sys.meta_path.insert(0, Blocker())
        from tidings import Publisher
        from tidings.testing import RecordingPublisher

        recorder = RecordingPublisher()
        recorder.publish("news", {"n": 1})
        assert recorder.on("news") == [{"n": 1}]
        with Publisher(sys.argv[1], sys.argv[2]) as pub:
            print(pub.publish("small", {"deps": True}).offset)

        import asyncio

        async def main():
            async with Publisher(sys.argv[1], sys.argv[2]) as pub:
                print((await pub.apublish("small", {"deps": "async"})).offset)

        asyncio.run(main())
        """
    )
    with server_in_thread(api_key=KEY) as server:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        done = subprocess.run(
            [sys.executable, "-c", script, server.url, KEY],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["1", "2"]
        assert stored(server, "small") == [b'{"deps":true}', b'{"deps":"async"}']


async def test_many_publishes_in_flight_share_a_few_pipelined_connections(server: Server) -> None:
    async with Publisher(server.url, KEY) as pub:
        results = await asyncio.gather(*(pub.apublish("crowd", {"n": i}) for i in range(500)))
        # Kept open for the next publishes: at most the pool's four.
        assert 1 <= server.app.connection_counts()["http"] <= 4
    assert sorted(r.offset for r in results) == list(range(1, 501))
    history = await server.app.node.history("crowd", HistoryQuery(limit=500))
    assert len(history.publications) == 100  # the namespace's history size
    # Each call's answer is its own publication's.
    stored = {p.offset: orjson.loads(p.data)["n"] for p in history.publications}
    assert all(stored[r.offset] == i for i, r in enumerate(results) if r.offset in stored)


async def test_a_server_that_closes_after_every_answer_still_gets_every_publish() -> None:
    offsets = iter(range(1, 1000))
    served = []

    async def one_answer_per_connection(reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            key = re.search(rb"idempotency-key: (\S+)", head.lower()).group(1)
            served.append(key)
            offset = next(offsets)
            body = orjson.dumps(
                {
                    "channel": "c",
                    "offset": offset,
                    "epoch": "e",
                    "id": f"c:{offset}:e",
                    "subscribers": 0,
                }
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()  # what was pipelined behind the answer is never read

    listener = await asyncio.start_server(one_answer_per_connection, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with Publisher(f"http://127.0.0.1:{port}", KEY, backoff=0.01, retries=10) as pub:
            results = await asyncio.gather(*(pub.apublish("c", i) for i in range(40)))
    finally:
        listener.close()
        await listener.wait_closed()
    assert len({r.offset for r in results}) == 40  # each call got an answer of its own
    assert len(set(served)) == 40  # and each publication was served once
