"""The ``tidings`` command as a user runs it: serve, publish, subscribe, shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import httpx
import pytest
from integration_helpers import until

from tidings import cli
from tidings.config import Config
from tidings.server import Server
from tidings.server.sessions import StreamSession
from tidings.testing import TIMEOUT, running_server
from tidings.testing.tls import make_certificates

CLI = [sys.executable, "-m", "tidings.cli"]


async def read_until(stream: asyncio.StreamReader, pattern: str) -> re.Match[str]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"stream ended before {pattern!r}")
            match = re.search(pattern, line)
            if match:
                return match


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc.returncode, out.decode(), err.decode()


def spawn(*args: str) -> Awaitable[asyncio.subprocess.Process]:
    """``tidings <args>`` with its output piped."""
    return asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


@asynccontextmanager
async def running(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``tidings`` process, killed on the way out if it is still running."""
    proc = await spawn(*args)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_publish_subscribe_and_sigterm():
    async with running("serve", "--port", "0", "--log-level", "warning") as server:
        assert server.stdout is not None
        url = (await read_until(server.stdout, r"serving on (http://\S+)")).group(1)
        generated = r"API key \(generated for this run\): (\S+)"
        key = (await read_until(server.stdout, generated)).group(1)

        # --since 0 makes delivery certain whether the subscriber connects before or after
        # the publication: live, or from history.
        async with running("subscribe", "news", "--url", url, "--raw", "--since", "0") as sub:
            assert sub.stdout is not None
            env = {**os.environ, "TIDINGS_API_KEY": key}
            code, out, err = await run("publish", "news", '{"text":"hello"}', "--url", url, env=env)
            assert code == 0, err
            assert re.search(r"news offset 1 epoch \S+ -> [01] subscriber", out)
            line = await read_until(sub.stdout, r"hello")
            assert line.string.strip() == '{"text":"hello"}'

        code, _, err = await run("publish", "news", "x", "--url", url, "--api-key", "wrong")
        assert code == 1 and "API key" in err

        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), TIMEOUT) == 0


async def test_subscribe_since_replays_history():
    serve = ("serve", "--port", "0", "--api-key", "k", "--log-level", "warning")
    async with running(*serve) as server:
        assert server.stdout is not None
        url = (await read_until(server.stdout, r"serving on (http://\S+)")).group(1)
        env = {**os.environ, "TIDINGS_API_KEY": "k"}
        for text in ("one", "two", "three"):
            assert (await run("publish", "log", text, "--url", url, env=env))[0] == 0
        async with running("subscribe", "log", "--url", url, "--since", "1") as sub:
            assert sub.stdout is not None
            first = await read_until(sub.stdout, r'"offset":(\d+).*"data":"(\w+)"')
            second = await read_until(sub.stdout, r'"offset":(\d+).*"data":"(\w+)"')
            assert [first.groups(), second.groups()] == [("2", "two"), ("3", "three")]
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), TIMEOUT) == 0


@pytest.mark.parametrize(
    ("text", "env", "line"),
    [
        ('port = "8312"\n', {}, "port = '8312' (PATH): expected an integer, got a string"),
        ('log_level = "verbose"\n', {}, "log_level = 'verbose' (PATH): expected one of 'debug'"),
        (
            "",
            {"TIDINGS_APIKEY": "k"},
            "unknown environment variable TIDINGS_APIKEY (did you mean 'TIDINGS_API_KEY'?)",
        ),
        ("port = \n", {}, "PATH: Invalid value"),
    ],
)
async def test_bad_configuration_is_one_line_and_exit_2(tmp_path, text, env, line):
    bad = tmp_path / "tidings.toml"
    bad.write_text(text)
    code, out, err = await run(
        "serve", "--config", str(bad), "--port", "0", env={**os.environ, **env}
    )
    assert code == 2 and "serving on" not in out
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("tidings: configuration error: " + line.replace("PATH", str(bad)))


async def test_genconfig_writes_what_checkconfig_and_serve_accept(tmp_path):
    code, out, err = await run("genconfig")
    assert code == 0, err
    assert "\nping_interval = 25.0\n" in out and "\n[namespaces]\n" in out
    path = tmp_path / "tidings.toml"
    code, _, err = await run("genconfig", str(path))
    assert code == 0 and path.read_text() == out
    # Never over a file that is there.
    code, _, err = await run("genconfig", str(path))
    assert code == 2 and "exists" in err
    code, out, err = await run("checkconfig", str(path))
    assert (code, out, err) == (0, "ok\n", "")
    # Edited, and started from.
    path.write_text(path.read_text().replace("port = 8000", "port = 0"))
    async with running("serve", "--config", str(path)) as proc:
        assert proc.stdout is not None
        url = (await read_until(proc.stdout, r"serving on (\S+)"))[1]
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/health")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0


async def test_checkconfig_refuses_a_bad_file_without_starting(tmp_path):
    path = tmp_path / "tidings.toml"
    path.write_text("ping_interval = 0\n[namespaces.chat]\npresense = true\n")
    code, out, err = await run("checkconfig", str(path))
    assert (code, out) == (2, "")
    assert err == (
        f"tidings: configuration error: ping_interval = 0 ({path}): out of range: "
        "allowed 1 to 3,600 seconds\n"
    )
    path.write_text("[namespaces.chat]\npresense = true\n")
    code, _, err = await run("checkconfig", str(path))
    assert code == 2 and "namespaces.chat.presense (did you mean 'presence'?)" in err
    code, _, err = await run("checkconfig", str(tmp_path / "missing.toml"))
    assert code == 2 and "can't read" in err


async def test_token_mints_what_the_server_verifies(tmp_path):
    from tidings.core.tokens import InvalidToken, TokenVerifier

    secret = "s" * 32
    config = tmp_path / "tidings.toml"
    config.write_text(f'token_hmac_secret_key = "{secret}"\ntoken_audience = "app"\n')
    code, out, err = await run("token", "--user", "42", "--config", str(config))
    assert code == 0, err
    verifier = TokenVerifier(hmac_secret=secret, audience="app")
    connection_token = out.strip()
    claims = verifier.connect_token(connection_token)
    assert claims.user == "42" and claims.exp > 0
    code, out, _ = await run(
        "token", "--user", "42", "--channel", "$room", "--ttl", "0", "--config", str(config)
    )
    sub = verifier.subscribe_token(out.strip())
    assert (code, sub.channel, sub.exp) == (0, "$room", 0)
    # Each kind for its own use only.
    with pytest.raises(InvalidToken):
        verifier.connect_token(out.strip())
    with pytest.raises(InvalidToken):
        verifier.subscribe_token(connection_token)


async def test_token_without_a_secret_says_so(tmp_path):
    code, _, err = await run("token", "--user", "1", env={"PATH": os.environ["PATH"]})
    assert code == 2 and "token_hmac_secret_key" in err


async def test_out_of_range_setting_exits_2_naming_it(tmp_path):
    config = tmp_path / "tidings.toml"
    config.write_text("ping_interval = 0\n")
    code, out, err = await run("serve", "--config", str(config), "--port", "0")
    assert code == 2 and "serving on" not in out
    assert err.strip() == (
        f"tidings: configuration error: ping_interval = 0 ({config}): out of range: "
        "allowed 1 to 3,600 seconds"
    )


async def test_demo_on_a_public_address_is_refused_before_binding():
    code, out, err = await run("serve", "--demo", "--host", "0.0.0.0", "--port", "0")
    assert code == 2 and "serving on" not in out
    assert "configuration error" in err and "'0.0.0.0'" in err
    assert "API key" in err and "--demo-public" in err  # the risk, and how to force it


def test_demo_forced_public_starts_and_warns(monkeypatch, capsys):
    # In-process, so that nothing is bound on a public address: the serving step is
    # replaced by one that records what it would have served.
    served: list[Config] = []

    async def serve(config: Config, generated: bool) -> int:
        served.append(config)
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    monkeypatch.setattr(cli, "_raise_open_files_limit", lambda: None)
    argv = ["serve", "--demo", "--demo-public", "--host", "0.0.0.0", "--port", "0"]
    assert cli.main([*argv, "--api-key", "k"]) == 0
    assert [(c.host, c.demo, c.demo_public) for c in served] == [("0.0.0.0", True, True)]
    err = capsys.readouterr().err
    assert err.startswith("tidings: warning: the demo page on '0.0.0.0'")
    assert "API key" in err


def test_demo_warning_only_when_public():
    assert cli.demo_warning(Config(demo=True)) is None
    assert cli.demo_warning(Config(host="0.0.0.0")) is None
    assert cli.demo_warning(Config(demo=True, demo_public=True, host="::")) is not None


async def test_a_forced_demo_server_serves_the_page():
    config = Config(demo=True, demo_public=True, host="0.0.0.0", port=0, api_key="k")
    server = Server(config)
    # Configured for every address, listening on loopback only (the socket given).
    with socket.create_server(("127.0.0.1", 0)) as sock:
        await server.start(sock=sock)
        try:
            url = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=url, trust_env=False) as c:
                response = await c.get("/", timeout=TIMEOUT)
            assert response.status_code == 200 and "tidings demo" in response.text
        finally:
            await server.aclose()


async def test_serve_over_tls(tmp_path):
    certs = make_certificates(str(tmp_path))
    tls = ("--certfile", str(certs.server_cert), "--keyfile", str(certs.server_key))
    async with running("serve", "--port", "0", "--api-key", "k", *tls) as server:
        assert server.stdout is not None
        url = (await read_until(server.stdout, r"serving on (https://\S+)")).group(1)
        # httpx, and so tidings publish, trusts the CA named by SSL_CERT_FILE.
        env = {**os.environ, "TIDINGS_API_KEY": "k", "SSL_CERT_FILE": str(certs.ca_cert)}
        code, out, err = await run("publish", "news", "over tls", "--url", url, env=env)
        assert code == 0, err
        assert out.startswith("news offset 1 ")
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), TIMEOUT) == 0


async def test_serve_with_an_unreadable_key_exits_2(tmp_path):
    certs = make_certificates(str(tmp_path))
    missing = str(tmp_path / "missing.pem")
    tls = ("--certfile", str(certs.server_cert), "--keyfile", missing)
    code, out, err = await run("serve", "--port", "0", *tls)
    assert code == 2 and "serving on" not in out
    assert err.strip() == (
        f"tidings: configuration error: keyfile: can't read {missing}: No such file or directory"
    )


# tidings subscribe: reconnects, resumes, tells


async def lines(stream: asyncio.StreamReader, count: int) -> list[str]:
    async with asyncio.timeout(TIMEOUT):
        return [(await stream.readline()).decode().rstrip("\n") for _ in range(count)]


def stream_sessions(server: Server) -> list[StreamSession]:
    return [c for c in server.app.connections if isinstance(c, StreamSession)]


async def test_subscribe_resumes_exactly_after_a_lost_connection():
    async with running_server(api_key="k") as server:
        node = server.app.node
        args = ("subscribe", "a", "b", "--url", server.url, "--raw")
        async with running(*args) as sub:
            assert sub.stdout is not None and sub.stderr is not None
            await until(lambda: node.hub.count("a") == node.hub.count("b") == 1, "subscribed")
            node.publish_nowait("a", b'"a1"')
            assert await lines(sub.stdout, 1) == ["a1"]
            # The connection breaks; meanwhile both channels get a message — "b" its first,
            # which only the announced position lets the subscriber resume exactly.
            [session] = stream_sessions(server)
            session.transport.abort()
            node.publish_nowait("b", b'"b1"')
            node.publish_nowait("a", b'"a2"')
            assert sorted(await lines(sub.stdout, 2)) == ["a2", "b1"]
            await until(lambda: node.hub.count("a") == 1, "resubscribed")
            node.publish_nowait("a", b'"a3"')
            assert await lines(sub.stdout, 1) == ["a3"]
            lost = await read_until(sub.stderr, r"connection lost \((.*)\); reconnecting in")
            assert lost.group(1)
            resumed = await read_until(sub.stderr, r"reconnected; resuming after (\S+)")
            assert sorted(p.rsplit(":", 1)[0] for p in resumed.group(1).split(",")) == [
                "a:1",
                "b:0",
            ]


async def test_subscribe_reports_a_gap_after_the_server_restarts():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {"host": "127.0.0.1", "port": port, "api_key": "k"}
    first = Server(Config(**config))
    await first.start()
    async with running("subscribe", "news", "--url", first.url, "--raw") as sub:
        assert sub.stdout is not None and sub.stderr is not None
        await until(lambda: first.app.node.hub.count("news") == 1, "subscribed")
        first.app.node.publish_nowait("news", b'"one"')
        assert await lines(sub.stdout, 1) == ["one"]
        await first.aclose()  # the memory broker's history goes with it
        await read_until(sub.stderr, r"the server is shutting down")
        await read_until(sub.stderr, r"connection lost")
        second = Server(Config(**config))
        await second.start()
        try:
            second.app.node.publish_nowait("news", b'"two"')
            assert await lines(sub.stdout, 1) == ["two"]
            gap = await read_until(sub.stderr, r"gap in news: (.*)")
            assert "(epoch)" in gap.group(1)
        finally:
            await second.aclose()


async def test_subscribe_to_a_server_that_is_down_exits_1_with_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening
        code, out, err = await run("subscribe", "news", "--url", url)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"tidings: can't subscribe at {url}: ")
    assert "Traceback" not in err


async def test_subscribe_refused_exits_1_with_the_reason():
    async with running_server(api_key="k") as server:
        url = server.url
        code, _, err = await run("subscribe", "$private", "--url", url)
    assert code == 1
    assert err == (
        f"tidings: can't subscribe at {url}: "
        "403 this channel needs a token: use /connection/websocket\n"
    )


async def test_subscribe_ends_when_its_channels_are_deleted():
    async with running_server(api_key="k") as server:
        node = server.app.node
        async with running("subscribe", "gone", "--url", server.url) as sub:
            assert sub.stderr is not None
            await until(lambda: node.hub.count("gone") == 1, "subscribed")
            await node.delete_channel("gone")
            await read_until(sub.stderr, r"gone was deleted")
            assert await asyncio.wait_for(sub.wait(), TIMEOUT) == 0


async def test_publish_to_a_server_that_is_down_exits_1_with_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        env = {**os.environ, "TIDINGS_API_KEY": "k"}
        code, out, err = await run("publish", "news", "x", "--url", url, env=env)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"tidings: can't reach {url}: ")


async def test_token_refuses_a_short_secret(tmp_path):
    config = tmp_path / "tidings.toml"
    config.write_text('token_hmac_secret_key = "short-secret"\n')
    code, out, err = await run("token", "--user", "1", "--config", str(config))
    assert code == 2 and out == ""
    assert err.startswith(
        "tidings: token_hmac_secret_key is 12 bytes; HS256 needs at least 32 (RFC 7518 §3.2)"
    )
    assert err.count("\n") == 1 and "Warning" not in err


async def test_serve_log_level_debug_logs_requests():
    async with running("serve", "--port", "0", "--api-key", "k", "--log-level", "debug") as srv:
        assert srv.stdout is not None and srv.stderr is not None
        url = (await read_until(srv.stdout, r"serving on (http://\S+)")).group(1)
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=TIMEOUT) as c:
            assert (await c.get("/health")).status_code == 200
        await read_until(srv.stderr, r"DEBUG tidings.server: GET /health from 127\.0\.0\.1:\d+")
