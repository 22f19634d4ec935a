"""tidings as a user installs it: the wheel built from this tree, installed with pip into a
fresh virtual environment (dependencies from the package index, through pip's cache),
serving and publishing from there — not from the source tree."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

import tidings
from tidings.testing import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
# Building and installing may download from the index when pip's cache lacks something.
INSTALL_TIMEOUT = 600

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT)


def clean_env() -> dict[str, str]:
    """The environment without anything that would put this source tree on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        env=clean_env(),
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def pip(*args: str | Path) -> str:
    # This interpreter's pip installs into the environment named by --python.
    return run(sys.executable, "-m", "pip", "--disable-pip-version-check", *args)


def new_venv(path: Path) -> Path:
    run(sys.executable, "-m", "venv", "--without-pip", path)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the tree (so that no stale build/ of it counts)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    pip("wheel", "--no-deps", "-q", "-w", base / "dist", source)
    [built] = (base / "dist").glob("tidings-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and its dependencies; its bin/."""
    python = new_venv(tmp_path_factory.mktemp("venv") / "env")
    pip("--python", python, "install", "-q", wheel)
    return python.parent


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A working directory away from the source tree."""
    yield tmp_path


def test_the_wheel_holds_the_static_files_and_the_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
    static = ROOT / "src" / "tidings" / "server" / "static"
    for path in static.rglob("*"):
        if path.is_file():
            assert f"tidings/server/static/{path.relative_to(static)}" in names
    assert "tidings/py.typed" in names and "tidings/protocol/centrifuge/client.proto" in names
    assert f"Version: {tidings.__version__}" in meta
    assert re.search(r"Requires-Dist: redis\[hiredis\]>=[\d.]+; extra == \"redis\"", meta), meta


def test_version(installed: Path, outside: Path) -> None:
    assert run(installed / "tidings", "--version", cwd=outside).strip() == (
        f"tidings {tidings.__version__}"
    )
    where = run(installed / "python", "-c", "import tidings; print(tidings.__file__)", cwd=outside)
    assert Path(where.strip()).is_relative_to(installed.parent), where


async def read_until(stream: asyncio.StreamReader, pattern: str) -> re.Match[str]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"output ended before {pattern!r}"
            match = re.search(pattern, line)
            if match:
                return match


async def test_the_installed_server_serves_and_publishes(installed: Path, outside: Path) -> None:
    server = await asyncio.create_subprocess_exec(
        installed / "tidings",
        *("serve", "--port", "0", "--api-key", "k", "--demo", "--log-level", "warning"),
        stdout=asyncio.subprocess.PIPE,
        env=clean_env(),
        cwd=outside,
    )
    try:
        assert server.stdout is not None
        url = (await read_until(server.stdout, r"serving on (http://\S+)")).group(1)
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=TIMEOUT) as c:
            page = await c.get("/")  # the demo page, read from the installed package
            module = await c.get("/tidings.js")
            chat = await c.get("/demo/chat")
        assert page.status_code == 200 and "tidings demo" in page.text
        assert module.status_code == 200 and "export function subscribe" in module.text
        assert chat.status_code == 200 and "tidings chat" in chat.text
        ws_url = url.replace("http://", "ws://") + "/ws/news?since=0"
        async with websockets.connect(ws_url, proxy=None, open_timeout=TIMEOUT) as ws:
            publish = await asyncio.create_subprocess_exec(
                installed / "tidings",
                *("publish", "news", '{"from": "the wheel"}', "--url", url, "--api-key", "k"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=clean_env(),
                cwd=outside,
            )
            out, err = await asyncio.wait_for(publish.communicate(), TIMEOUT)
            assert publish.returncode == 0, err
            assert out.decode().startswith("news offset 1 ")
            message = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert message["data"] == {"from": "the wheel"}
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), TIMEOUT) == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


async def test_the_publisher_needs_only_httpx_and_orjson(
    wheel: Path, installed: Path, outside: Path, tmp_path: Path
) -> None:
    python = new_venv(tmp_path / "publisher-only")
    pip("--python", python, "install", "-q", "--no-deps", wheel)
    pip("--python", python, "install", "-q", "httpx", "orjson")
    missing = run(
        python,
        "-c",
        "import importlib.util as u; "
        "print([m for m in ('httptools', 'websockets', 'jwt', 'google.protobuf', 'uvloop') "
        "if u.find_spec(m.split('.')[0])])",
        cwd=outside,
    )
    assert missing.strip() == "[]"  # none of the server's dependencies is there
    server = await asyncio.create_subprocess_exec(
        installed / "tidings",
        *("serve", "--port", "0", "--api-key", "k", "--log-level", "warning"),
        stdout=asyncio.subprocess.PIPE,
        env=clean_env(),
        cwd=outside,
    )
    try:
        assert server.stdout is not None
        url = (await read_until(server.stdout, r"serving on (http://\S+)")).group(1)
        script = (
            "import asyncio, sys\n"
            "from tidings import Publisher\n"
            "from tidings.testing import RecordingPublisher\n"
            "RecordingPublisher().publish('x', 1)\n"
            "with Publisher(sys.argv[1], 'k') as pub:\n"
            "    print(pub.publish('small', {'n': 1}).offset)\n"
            "    print(asyncio.run(pub.apublish('small', {'n': 2})).offset)\n"
        )
        proc = await asyncio.create_subprocess_exec(
            python,
            "-c",
            script,
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=clean_env(),
            cwd=outside,
        )
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, err.decode()
        assert out.decode().split() == ["1", "2"]
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), TIMEOUT)


def test_make_serve_installs_runtime_only(tmp_path: Path) -> None:
    venv = f"VENV={tmp_path / 'venv'}"  # not there: make plans every install step

    def installs(target: str) -> list[str]:
        plan = run("make", "-n", "-C", ROOT, target, venv)
        return [line for line in plan.splitlines() if "pip install" in line]

    serve = installs("serve")
    assert any(line.endswith(" -e .") for line in serve), serve
    assert not any("[test]" in line for line in serve), serve
    unit = installs("unit")
    assert unit[: len(serve)] == serve and any("-e '.[test]'" in line for line in unit), unit
