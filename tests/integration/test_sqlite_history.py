"""Durable history (``history_path``) as users see it: clients resume exactly across a
restart, a SIGKILL mid-burst loses nothing acknowledged, a failing disk fails those
publishes with 503 while the server keeps serving, and a bad file stops start-up with one
line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration_helpers import (
    AUTH,
    http_client,
    publish,
    sse_connect,
    subscribed,
    ws_connect,
    ws_json,
)

from tidings.core.tokens import mint_token
from tidings.testing import TIMEOUT, running_server

CLI = [sys.executable, "-m", "tidings.cli"]
SECRET = "tidings-sqlite-tests-hmac-secret-0123456789"


def data(event: Any) -> Any:
    return json.loads(event.data)


async def test_sse_resumes_exactly_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "history.db")
    async with running_server(history_path=path) as server:
        async with sse_connect(server, "/sse/news") as events:
            await subscribed(server, "news")
            for n in (1, 2):
                await publish(server, "news", {"n": n})
            seen = [await events.next() for _ in range(2)]
        last_id = seen[-1].id
        assert last_id is not None
        epoch = last_id.split(":")[2]
        await publish(server, "news", {"n": 3})  # missed: published while it was away
    async with running_server(history_path=path) as server:
        await publish(server, "news", {"n": 4})  # missed too, after the restart
        async with sse_connect(server, "/sse/news", {"Last-Event-ID": last_id}) as events:
            resumed = [await events.next() for _ in range(2)]
            assert [e.event for e in resumed] == ["message", "message"]  # no gap notice
            assert [e.id for e in resumed] == [f"news:3:{epoch}", f"news:4:{epoch}"]
            assert [data(e)["data"] for e in resumed] == [{"n": 3}, {"n": 4}]
            await publish(server, "news", {"n": 5})
            live = await events.next()
            assert (live.id, data(live)["data"]) == (f"news:5:{epoch}", {"n": 5})


async def test_client_protocol_recovers_across_a_restart(tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "history_path": str(tmp_path / "history.db"),
        "token_hmac_secret_key": SECRET,
        "default_namespace": {"allow_subscribe_for_client": True, "force_recovery": True},
    }
    async with running_server(**settings) as server:
        for n in range(1, 4):
            result = await publish(server, "room", {"n": n})
    epoch = result["epoch"]
    async with running_server(**settings) as server:
        await publish(server, "room", {"n": 4})
        request = {
            "token": mint_token(SECRET, "u1", channels=["room"]),
            "subs": {"room": {"recover": True, "offset": 1, "epoch": epoch}},
        }
        async with ws_connect(server, "/connection/uni_websocket") as ws:
            await ws.send(json.dumps(request))
            room = (await ws_json(ws))["connect"]["subs"]["room"]
            assert room["recovered"] and room["epoch"] == epoch
            assert room["publications"] == [
                {"data": {"n": 2}, "offset": 2},
                {"data": {"n": 3}, "offset": 3},
                {"data": {"n": 4}, "offset": 4},
            ]


async def test_a_failing_commit_answers_503_and_the_server_keeps_serving(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    async with running_server(history_path=str(path)) as server:
        await publish(server, "news", "before")
    # A real SQLite error inside the transaction, as a failing disk would raise.
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER fault BEFORE INSERT ON history WHEN NEW.data = CAST('\"poison\"' AS BLOB) "
        "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    conn.commit()
    conn.close()
    async with (
        running_server(history_path=str(path)) as server,
        sse_connect(server, "/sse/news") as events,
        http_client(server) as client,
    ):
        await subscribed(server, "news")
        resp = await client.post("/pub/news", content=b'"poison"', headers=AUTH)
        assert resp.status_code == 503
        assert resp.json() == {"error": "broker unavailable"}  # no internal text
        health = await client.get("/health")
        assert health.status_code == 503 and "disk I/O error" in health.text
        after = await publish(server, "news", "after")
        assert after["offset"] == 2  # the failed publish took no offset
        event = await events.next()
        assert (data(event)["offset"], data(event)["data"]) == (2, "after")
        assert (await client.get("/health")).status_code == 200


# The store as `tidings serve` runs it


@asynccontextmanager
async def serving(path: Path, *extra: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``tidings serve --history-path path`` on a free port; killed on the way out."""
    env = {**os.environ, "TIDINGS_HISTORY_SIZE": "100000", "TIDINGS_LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "serve",
        "--port",
        "0",
        "--api-key",
        "test-key",
        "--history-path",
        str(path),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            assert proc.stdout is not None
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "the server ended before serving"
                if "serving on" in line:
                    url = line.split("serving on ", 1)[1].split()[0]
                    break
        yield proc, url
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def history(url: str, channel: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, trust_env=False) as client:
        resp = await client.post(
            "/api/history", json={"channel": channel, "limit": -1}, headers=AUTH
        )
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()["result"]
    return result


async def test_sigkill_during_a_burst_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    channels = ["burst-a", "burst-b", "burst-c"]
    acked: dict[str, dict[int, tuple[str, Any]]] = {ch: {} for ch in channels}
    enough = asyncio.Event()

    async def publisher(url: str, worker: int) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=url, timeout=TIMEOUT, trust_env=False, limits=limits
        ) as client:
            for i in range(100_000):
                channel = channels[(worker + i) % len(channels)]
                body = {"w": worker, "i": i}
                try:
                    resp = await client.post(f"/pub/{channel}", json=body, headers=AUTH)
                except httpx.HTTPError:
                    return  # the server is gone
                assert resp.status_code == 200, resp.text
                result = resp.json()
                acked[channel][result["offset"]] = (result["epoch"], body)
                if sum(map(len, acked.values())) >= 600:
                    enough.set()

    async with serving(path) as (proc, url):
        tasks = [asyncio.create_task(publisher(url, w)) for w in range(8)]
        await asyncio.wait_for(enough.wait(), TIMEOUT)
        proc.send_signal(signal.SIGKILL)  # mid-burst: the publishers are still going
        await proc.wait()
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert proc.returncode == -signal.SIGKILL

    async with serving(path) as (_, url):
        tops = {}
        for channel in channels:
            kept = await history(url, channel)
            tops[channel] = kept["offset"]
            held = {p["offset"]: p["data"] for p in kept["publications"]}
            # Gap-free from 1, and every acknowledged one is there, as acknowledged.
            assert sorted(held) == list(range(1, kept["offset"] + 1))
            for offset, (epoch, body) in acked[channel].items():
                assert epoch == kept["epoch"], (channel, offset)
                assert held.get(offset) == body, (channel, offset)
        # And the streams go on where they stood.
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, trust_env=False) as client:
            resp = await client.post("/pub/burst-a", json="next", headers=AUTH)
        assert resp.json()["offset"] == tops["burst-a"] + 1
        assert resp.json()["epoch"] == acked["burst-a"][1][0]


async def start_up_error(*args: str) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "serve",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert "serving on" not in out.decode()
    assert proc.returncode is not None
    return proc.returncode, err.decode().splitlines()


@pytest.mark.parametrize("kind", ["corrupt", "missing-dir", "directory", "in-use"])
async def test_a_bad_store_file_stops_start_up_with_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "history.db"
    if kind == "corrupt":
        path.write_bytes(b"\x00garbage that is no SQLite file" * 64)
        expected = "file is not a database"
    elif kind == "missing-dir":
        path = tmp_path / "nowhere" / "history.db"
        expected = "unable to open database file"
    elif kind == "directory":
        path = tmp_path
        expected = "unable to open database file"
    else:
        expected = "database is locked (another tidings serve uses this file?)"
    if kind == "in-use":
        async with serving(path):
            code, lines = await start_up_error("--history-path", str(path))
    else:
        code, lines = await start_up_error("--history-path", str(path))
    assert code == 1
    errors = [line for line in lines if line.startswith("tidings:")]
    assert errors == [f"tidings: can't start the broker: history store {path}: {expected}"]
    assert not any("Traceback" in line for line in lines)


async def test_a_bad_store_setting_is_a_configuration_error(tmp_path: Path) -> None:
    code, lines = await start_up_error(
        "--broker", "sqlite:///a.db", "--history-path", str(tmp_path / "b.db")
    )
    assert code == 2
    assert lines[0].startswith("tidings: configuration error: broker 'sqlite:///a.db' and")
