"""``log_format = "json"`` and the connection and publication lines, read from the stderr of
a real ``tidings serve``; the text format's lines from the logging records."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration_helpers import AUTH, http_client, publish, subscribed, until, ws_connect
from websockets.asyncio.client import connect

from tidings.config import Config
from tidings.exceptions import ConfigError
from tidings.server import Server
from tidings.testing import TIMEOUT

CLI = [sys.executable, "-m", "tidings.cli"]


async def json_line(stream: asyncio.StreamReader, **wanted: Any) -> dict[str, Any]:
    """The next stderr line that is a JSON object holding every ``wanted`` item."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"stderr ended before a line with {wanted}")
            line = json.loads(raw)  # every line is one JSON object
            if all(line.get(k) == v for k, v in wanted.items()):
                return line


async def test_json_logs_of_a_real_server(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(
        'log_format = "json"\nlog_publications = true\napi_key = "test-key"\nport = 0\n'
    )
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            while not (m := re.search(rb"serving on (http://\S+)", await proc.stdout.readline())):
                pass
        url = m.group(1).decode()
        async with connect(url.replace("http", "ws", 1) + "/ws/news", proxy=None):
            opened = await json_line(proc.stderr, event="open")
            assert opened["transport"] == "ws"
            assert re.fullmatch(r"127\.0\.0\.1:\d+", opened["remote"])
            assert opened["level"] == "info" and opened["logger"] == "tidings.connections"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", opened["time"])
            assert opened["message"] == f"ws connection from {opened['remote']} opened"
            async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
                resp = await client.post("/pub/news", json={"n": 1}, headers=AUTH)
                assert resp.status_code == 200
            published = await json_line(proc.stderr, event="publish")
            assert published["channel"] == "news" and published["offset"] == 1
            # The subscriber may or may not have joined yet: the line says which.
            assert isinstance(published["epoch"], str) and published["subscribers"] in (0, 1)
        closed = await json_line(proc.stderr, event="close")
        assert closed["transport"] == "ws" and closed["remote"] == opened["remote"]
        assert (closed["reason"], closed["code"]) == ("client", 1000)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


async def test_text_lines_for_open_close_and_no_publications_by_default(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidings")
    async with ws_connect(server, "/ws/news") as ws:
        await subscribed(server, "news")
        await publish(server, "news", {"n": 1})
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    await until(lambda: len(lines(caplog, "tidings.connections")) == 2, "open and close")
    opened, closed = lines(caplog, "tidings.connections")
    addr = r"127\.0\.0\.1:\d+"
    assert re.fullmatch(rf"ws connection from {addr} opened", opened.getMessage())
    assert re.fullmatch(rf"ws connection from {addr} closed: client 1000", closed.getMessage())
    assert not [r for r in caplog.records if r.getMessage().startswith("published to")]
    # Plain requests (the publish) are not connection lines.
    async with http_client(server) as client:
        assert (await client.get("/health")).status_code == 200
    assert len(lines(caplog, "tidings.connections")) == 2


async def test_server_shutdown_is_the_close_reason(caplog: pytest.LogCaptureFixture) -> None:
    from tidings.testing import running_server

    caplog.set_level(logging.INFO, logger="tidings")
    async with running_server() as srv, ws_connect(srv, "/ws/news"):
        await subscribed(srv, "news")
        await srv.aclose()
    [closed] = [r for r in lines(caplog, "tidings.connections") if "closed" in r.getMessage()]
    assert closed.getMessage().endswith("closed: shutdown")
    assert closed.fields["reason"] == "shutdown"  # type: ignore[attr-defined]


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"log_format = 'xml'.*expected one of 'text', 'json'"):
        Config(log_format="xml").validate()
