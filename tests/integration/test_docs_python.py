"""Every Python example in the README and docs/ runs against a real server.

The server runs in a thread of its own (its own event loop), so that an example may block
(``Publisher.publish``) as well as ``await``; an example sees it as ``server`` and reaches
it at the documented address once that is rewritten to the server's.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidings import Publisher
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)

EXAMPLES = [
    pytest.param(re.sub(rf"(?m)^{indent}", "", code), id=f"{path.name}#{n}")
    for path in DOCS
    for n, (indent, code) in enumerate(BLOCK.findall(path.read_text()), 1)
]


@pytest.fixture
def redis_url(code: str) -> Iterator[str]:
    """A redis-server of the test's own for the examples that publish through Redis."""
    if "redis" not in code:
        yield ""
        return
    from tidings.testing.redis import redis_server

    with redis_server() as srv:
        yield srv.url


@pytest.fixture
def threaded_server(redis_url: str) -> Iterator[Server]:
    settings = {"broker": redis_url} if redis_url else {}
    ready = threading.Event()
    stop: dict[str, Any] = {}
    holder: dict[str, Server] = {}

    async def serve() -> None:
        async with running_server(api_key="dev", **settings) as server:
            holder["server"] = server
            stop["event"] = asyncio.Event()
            stop["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop["event"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT)
    yield holder["server"]
    stop["loop"].call_soon_threadsafe(stop["event"].set)
    thread.join(TIMEOUT)


def test_the_docs_have_python_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("code", EXAMPLES)
def test_python_example_runs(code: str, threaded_server: Server, redis_url: str) -> None:
    code = code.replace("http://127.0.0.1:8000", threaded_server.url)
    if redis_url:  # the documented Redis is the machine's; the example gets its own
        port = redis_url.rsplit(":", 1)[1]
        code = code.replace("redis://127.0.0.1:6379", redis_url)
        code = code.replace("redis.Redis()", f"redis.Redis(port={port})")
    compiled = compile(code, "<docs>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    # A module name of its own, as a script has (Flask(__name__) looks its module up).
    namespace: dict[str, Any] = {"server": threaded_server, "__name__": "docs_example"}

    async def run() -> None:
        if compiled.co_flags & inspect.CO_COROUTINE:
            await eval(compiled, namespace)
        else:
            # Blocking code runs where blocking code runs: outside the loop, so that an
            # example may start event loops of its own (asyncio.run).
            await asyncio.to_thread(eval, compiled, namespace)
        for value in namespace.values():  # an example may leave a client open for later
            if isinstance(value, Publisher):
                await value.aclose()
                value.close()

    asyncio.run(run())
