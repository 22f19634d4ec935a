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
from integration_helpers import make_certificates

from tidings import cli
from tidings.config import Config
from tidings.server import Server
from tidings.testing import TIMEOUT

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


async def test_bad_configuration_exits_2(tmp_path):
    bad = tmp_path / "tidings.toml"
    bad.write_text("port = 'x'\n")
    code, _, err = await run("serve", "--config", str(bad))
    assert code == 2 and "configuration error" in err


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
        "tidings: configuration error: ping_interval = 0 is out of range: "
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
    tls = ("--certfile", certs.certfile, "--keyfile", certs.keyfile)
    async with running("serve", "--port", "0", "--api-key", "k", *tls) as server:
        assert server.stdout is not None
        url = (await read_until(server.stdout, r"serving on (https://\S+)")).group(1)
        # httpx, and so tidings publish, trusts the CA named by SSL_CERT_FILE.
        env = {**os.environ, "TIDINGS_API_KEY": "k", "SSL_CERT_FILE": certs.cafile}
        code, out, err = await run("publish", "news", "over tls", "--url", url, env=env)
        assert code == 0, err
        assert out.startswith("news offset 1 ")
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), TIMEOUT) == 0


async def test_serve_with_an_unreadable_key_exits_2(tmp_path):
    certs = make_certificates(str(tmp_path))
    missing = str(tmp_path / "missing.pem")
    tls = ("--certfile", certs.certfile, "--keyfile", missing)
    code, out, err = await run("serve", "--port", "0", *tls)
    assert code == 2 and "serving on" not in out
    assert err.strip() == (
        f"tidings: configuration error: keyfile: can't read {missing}: No such file or directory"
    )
