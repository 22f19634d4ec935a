"""The Flask and Celery examples of docs/integrations.md, run as they stand there: the
Flask view against a real hub with an SSE subscriber, the Celery task in a real worker
(``celery worker``, its own process) on a redis-server this test starts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from integration_helpers import sse_connect, subscribed

from tidings.server import Server
from tidings.testing import TIMEOUT, running_server

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "integrations.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC, re.S | re.M)
[FLASK] = [b for b in BLOCKS if "from flask" in b]
[CELERY] = [b for b in BLOCKS if "from celery" in b]
# A Celery worker's start-up (imports, broker connection) takes seconds on a busy machine.
WORKER_TIMEOUT = 6 * TIMEOUT

pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture
async def hub() -> AsyncIterator[Server]:
    async with running_server(api_key="dev") as server:
        yield server


async def test_the_flask_view_publishes_to_a_browser_stream(hub):
    code = FLASK.replace("http://127.0.0.1:8000", hub.url)
    async with sse_connect(hub, "/sse/order-7") as events:
        await subscribed(hub, "order-7")
        namespace: dict[str, Any] = {"__name__": "flask_example"}
        # The view blocks (Publisher.publish): it runs where a WSGI worker would, off the loop.
        await asyncio.to_thread(exec, compile(code, "integrations.md", "exec"), namespace)
        answer = namespace["answer"].get_json()
        assert answer["subscribers"] == 1
        event = await events.next()
        assert event.event == "order"
        assert json.loads(event.data)["data"] == {"state": "paid"}
        assert event.id == answer["position"]
        namespace["publisher"].close()


async def test_the_celery_task_publishes_from_a_real_worker_once(hub, redis_server, tmp_path):
    (tmp_path / "tasks.py").write_text(CELERY)
    env = {
        **os.environ,
        "CELERY_BROKER_URL": redis_server.url,
        "TIDINGS_URL": hub.url,
        "TIDINGS_API_KEY": "dev",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
    }
    options = ["--pool", "solo", "--loglevel", "warning", "--without-gossip", "--without-mingle"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", *options],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    old = {k: os.environ.get(k) for k in ("CELERY_BROKER_URL", "TIDINGS_URL")}
    os.environ["CELERY_BROKER_URL"], os.environ["TIDINGS_URL"] = redis_server.url, hub.url
    sys.path.insert(0, str(tmp_path))
    try:
        import tasks  # the web application's side: it only sends the task

        async with sse_connect(hub, "/sse/user-42") as events:
            await subscribed(hub, "user-42")
            sent = tasks.import_done.delay(42, 120)
            first = await asyncio.to_thread(sent.get, timeout=WORKER_TIMEOUT)
            event = await events.next()
            assert event.event == "import_done"
            assert json.loads(event.data)["data"] == {"contacts": 120}
            assert first == {"position": event.id, "duplicate": False}
            # The same task delivered again (a retry keeps its id): published once. (Its
            # first result is forgotten so that the second run's is the one read.)
            await asyncio.to_thread(sent.forget)
            again = tasks.import_done.apply_async((42, 120), task_id=sent.id)
            second = await asyncio.to_thread(again.get, timeout=WORKER_TIMEOUT)
            assert second == {"position": event.id, "duplicate": True}
        tasks.publisher.close()
        tasks.app.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tasks", None)
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        worker.terminate()
        try:
            _, err = worker.communicate(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            _, err = worker.communicate()
        assert b"Traceback" not in err, err.decode(errors="replace")
