"""``tidings serve --workers N`` and its supervisor, with real processes: the refusal without
a shared broker, start, a worker killed and replaced, graceful stop, a crash loop backing
off, workers that never start, a worker that ignores SIGTERM, a supervisor that dies."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tidings.testing import TIMEOUT
from tidings.testing.redis import RedisServer

CLI = [sys.executable, "-m", "tidings.cli"]
KEY = "workers-key"
SERVE = ("serve", "--port", "0", "--workers", "2", "--api-key", KEY, "--log-level", "info")


async def read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> re.Match[str]:
    """The first line matching ``pattern``; every line read is appended to ``seen``."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"output ended before {pattern!r}: {seen}")
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match


@asynccontextmanager
async def process(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A process with stdout and stderr merged into ``stdout``; killed on the way out if it
    is still running (its workers then stop by themselves: see the lifeline test)."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux: /proc/<pid>/task/<pid>/children)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def eventually(check, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll ``check()`` (sync or async) until true, within ``TIMEOUT``."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)  # polling another process: no event to wait on
    raise AssertionError(what)  # pragma: no cover


def http(url: str) -> httpx.AsyncClient:
    """A client holding at most one connection, so that requests in a row reuse it: the
    worker that answered ``/health`` answers what follows."""
    return httpx.AsyncClient(
        base_url=url,
        timeout=TIMEOUT,
        trust_env=False,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def node_of(client: httpx.AsyncClient) -> str:
    resp = await client.get("/health")
    assert resp.status_code == 200, resp.text
    node: str = resp.json()["node"]
    return node


def local_address(resp: httpx.Response) -> tuple[str, int]:
    """The client end of the connection ``resp`` came on."""
    address: tuple[str, int] = resp.extensions["network_stream"].get_extra_info("client_addr")
    return address


async def client_on_another_node(
    url: str, avoid: set[str]
) -> tuple[httpx.AsyncClient, str, tuple[str, int]]:
    """A client whose connection landed on a worker whose node isn't in ``avoid`` (the
    kernel spreads connections, so a few tries find one), the node, and the connection's
    local address."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            client = http(url)
            resp = await client.get("/health")
            node = resp.json()["node"]
            if node not in avoid:
                return client, node, local_address(resp)
            await client.aclose()


def pid_of(node: str) -> int:
    return int(node.rsplit("-", 1)[1])


# --- the refusal ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "env", "toml"),
    [("flag", {}, ""), ("environment", {"TIDINGS_WORKERS": "3"}, ""), ("toml", {}, "workers = 4")],
)
async def test_workers_without_a_shared_broker_are_refused(
    tmp_path: Path, how: str, env: dict[str, str], toml: str
) -> None:
    args = ["serve", "--port", "0"]
    if how == "flag":
        args += ["--workers", "2"]
    if toml:
        (tmp_path / "tidings.toml").write_text(toml + "\n")
        args += ["--config", str(tmp_path / "tidings.toml")]
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2 and b"serving on" not in out
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tidings: configuration error: workers = ")
    assert "needs a shared broker" in lines[0] and "--broker redis://" in lines[0]


@pytest.mark.parametrize("count", ["0", "257"])
async def test_a_worker_count_out_of_range_is_refused(count: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--port", "0", "--workers", count, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2
    assert err.decode().strip() == (
        f"tidings: configuration error: workers = {count} (--workers): out of range: "
        "allowed 1 to 256"
    )


# --- with a Redis broker -------------------------------------------------------------


async def test_workers_start_are_replaced_when_killed_and_stop_on_sigterm(
    redis_server: RedisServer,
) -> None:
    async with process(*CLI, *SERVE, "--broker", redis_server.url) as supervisor:
        assert supervisor.stdout is not None
        seen: list[str] = []
        match = await read_until(supervisor.stdout, r"serving on (http://\S+) \(2 workers\)", seen)
        url = match.group(1)
        assert not url.endswith(":0")
        workers = children(supervisor.pid)
        assert len(workers) == 2

        # Both serve, each as a node of its own named <host>-<pid>.
        nodes: set[str] = set()

        async def both_answered() -> bool:
            async with http(url) as client:
                nodes.add(await node_of(client))
            return {pid_of(node) for node in nodes} == workers

        await eventually(both_answered, "both workers to answer /health")

        # A worker killed without warning is replaced, and the replacement serves.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        await eventually(
            lambda: len(children(supervisor.pid) - workers) == 1, "a replacement worker"
        )
        (replacement,) = children(supervisor.pid) - workers
        assert victim not in children(supervisor.pid)

        async def replacement_answers() -> bool:
            async with http(url) as client:
                return pid_of(await node_of(client)) == replacement

        await eventually(replacement_answers, "the replacement to answer /health")
        await read_until(supervisor.stdout, rf"pid {victim}\) exited \(killed by SIGKILL\)", seen)

        # SIGTERM stops every worker gracefully, and the supervisor exits 0.
        running = children(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), TIMEOUT) == 0
        rest = (await supervisor.stdout.read()).decode()
        for pid in running:
            assert not alive(pid)
            assert re.search(rf"pid {pid}\) stopped: exit code 0", rest), rest
        assert "tidings: stopped" in rest
    with pytest.raises(httpx.ConnectError):
        async with http(url) as client:
            await client.get("/health")


async def test_a_subscriber_on_one_worker_gets_what_is_published_through_another(
    redis_server: RedisServer,
) -> None:
    async with process(*CLI, *SERVE, "--broker", redis_server.url) as supervisor:
        assert supervisor.stdout is not None
        url = (await read_until(supervisor.stdout, r"serving on (http://\S+)", [])).group(1)
        subscriber, sub_node, sub_address = await client_on_another_node(url, set())
        publisher, pub_node, _ = await client_on_another_node(url, {sub_node})
        assert sub_node != pub_node
        try:
            # since=0: every publication, whether it comes before the subscription is
            # live (from history) or after.
            async with subscriber.stream("GET", "/sse/news?since=0") as stream:
                assert stream.status_code == 200
                # The connections /health answered on: the stream is on the subscriber's
                # worker, the publications go through the other.
                assert local_address(stream) == sub_address
                assert await node_of(publisher) == pub_node
                for n in range(1, 4):
                    resp = await publisher.post(
                        "/pub/news", json={"n": n}, headers={"X-API-Key": KEY}
                    )
                    assert resp.status_code == 200, resp.text
                    assert resp.json()["offset"] == n
                got = []
                async with asyncio.timeout(TIMEOUT):
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):
                            got.append(json.loads(line[5:]))
                            if len(got) == 3:
                                break
        finally:
            await subscriber.aclose()
            await publisher.aclose()
        assert [(m["offset"], m["data"]) for m in got] == [(n, {"n": n}) for n in (1, 2, 3)]
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), TIMEOUT) == 0


async def test_workers_stop_when_the_supervisor_dies(redis_server: RedisServer) -> None:
    # A short shutdown bound (1 + 5 s), well within the wait below, even for a worker whose
    # graceful shutdown would hang.
    env = {**os.environ, "TIDINGS_SHUTDOWN_TIMEOUT": "1"}
    async with process(*CLI, *SERVE, "--broker", redis_server.url, env=env) as supervisor:
        assert supervisor.stdout is not None
        url = (await read_until(supervisor.stdout, r"serving on (http://\S+)", [])).group(1)
        workers = children(supervisor.pid)
        supervisor.kill()
        await eventually(lambda: not any(map(alive, workers)), "the orphaned workers to stop")
        await asyncio.wait_for(supervisor.wait(), TIMEOUT)
    with pytest.raises(httpx.ConnectError):
        async with http(url) as client:
            await client.get("/health")


# The fault: a shutdown that never ends (a broker that hangs on close, a task that ignores
# cancellation). The command is tidings serve itself, with App.aclose made to hang.
HANGING_SHUTDOWN = """
import asyncio, sys
import tidings.app, tidings.cli

async def hang(self):
    await asyncio.Event().wait()

tidings.app.App.aclose = hang
sys.exit(tidings.cli.main(sys.argv[1:]))
"""


async def test_an_orphaned_worker_whose_shutdown_hangs_exits_anyway(
    redis_server: RedisServer,
) -> None:
    env = {**os.environ, "TIDINGS_SHUTDOWN_TIMEOUT": "0.5"}
    command = [sys.executable, "-c", HANGING_SHUTDOWN, *SERVE, "--broker", redis_server.url]
    async with process(*command, env=env) as supervisor:
        assert supervisor.stdout is not None
        seen: list[str] = []
        await read_until(supervisor.stdout, r"serving on", seen)
        workers = children(supervisor.pid)
        supervisor.kill()
        await eventually(lambda: not any(map(alive, workers)), "the orphaned workers to exit")
        out = "".join(seen) + (await asyncio.wait_for(supervisor.stdout.read(), TIMEOUT)).decode()
    for pid in workers:
        assert re.search(rf"pid {pid}\): shutdown not done after 5.5 s", out), out


async def test_a_port_in_use_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The refusal comes first without a shared broker: give one that isn't reached.
        args = ("--port", str(port), "--broker", "redis://127.0.0.1:1")
        serve = [a for a in SERVE if a not in ("--port", "0")]
        async with process(*CLI, *serve, *args) as supervisor:
            assert supervisor.stdout is not None
            out = (await asyncio.wait_for(supervisor.stdout.read(), TIMEOUT)).decode()
            assert await supervisor.wait() == 1
    assert f"tidings: can't listen on 127.0.0.1:{port}: Address already in use" in out


# --- the supervisor alone, with workers of our own -----------------------------------

SUPERVISED = """
import logging, os, signal, sys, time
from tidings.workers import Supervisor

logging.basicConfig(level=logging.DEBUG, format="%(message)s", stream=sys.stdout)
mode = sys.argv[1]

def target(worker):
    if mode == "never-ready":
        return 3
    if mode == "deaf":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker.ready()
    if mode == "crash":
        return 4
    os.read(worker.lifeline, 1)  # until the supervisor is gone
    return 0

supervisor = Supervisor(
    2, target, stop_timeout=0.5, max_start_failures=3,
    on_ready=lambda: print("all ready", flush=True),
)
sys.exit(supervisor.run())
"""


def supervised(mode: str) -> list[str]:
    return [sys.executable, "-c", SUPERVISED, mode]


async def test_a_crash_loop_backs_off() -> None:
    async with process(*supervised("crash")) as supervisor:
        assert supervisor.stdout is not None
        seen: list[str] = []
        delays = []
        for _ in range(4):
            match = await read_until(
                supervisor.stdout,
                r"worker 0 \(pid \d+\) exited \(exit code 4\); "
                r"restarting it in ([\d.]+) s",
                seen,
            )
            delays.append(float(match.group(1)))
        # Each quick death doubles the pause before the next start.
        assert delays == [0.1, 0.2, 0.4, 0.8]
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), TIMEOUT) == 0


async def test_workers_that_never_start_make_the_supervisor_give_up() -> None:
    async with process(*supervised("never-ready")) as supervisor:
        assert supervisor.stdout is not None
        out = (await asyncio.wait_for(supervisor.stdout.read(), TIMEOUT)).decode()
        assert await supervisor.wait() == 1
    assert out.count("failed to start: exit code 3") == 3
    assert (
        "tidings: workers keep failing at start (3 times in a row, the last with exit code 3)"
        in out
    )
    assert "all ready" not in out


async def test_a_worker_that_ignores_sigterm_is_killed_after_the_deadline() -> None:
    async with process(*supervised("deaf")) as supervisor:
        assert supervisor.stdout is not None
        seen: list[str] = []
        await read_until(supervisor.stdout, "all ready", seen)
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), TIMEOUT) == 0
        out = "".join(seen) + (await supervisor.stdout.read()).decode()
    assert "2 workers still running 0.5 s after SIGTERM: SIGKILL" in out
    assert out.count("stopped: killed by SIGKILL") == 2
