"""Helpers of tidings' Django tests: Django processes, sessions, SSE parsing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tidings.testing import TIMEOUT

__all__ = ["EXAMPLE", "ROOT", "django_process", "free_port", "logged_in", "sse_events"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "django_notifications"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def django_process(args: list[str], hub_url: str, ready: str) -> Iterator[subprocess.Popen[str]]:
    """``python -m django <args>`` with the tests' settings and database, once it has
    printed a line starting with ``ready``; what it prints later is drained (and shown on
    failure) so that it never blocks on a full pipe."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tidings_test_settings",
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT / "tests" / "contrib_django"), str(EXAMPLE)]
        ),
        "DJANGO_TEST_DB": str(settings.DATABASES["default"]["NAME"]),
        "DJANGO_TEST_HUB_URL": hub_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:  # bounded by pytest-timeout if it never comes up
            seen.append(line)
            if line.startswith(ready):
                break
        else:
            proc.wait()
            pytest.fail(f"{args[0]} did not start:\n" + "".join(seen))
        drain = threading.Thread(target=seen.extend, args=(proc.stdout,), daemon=True)
        drain.start()
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)
        proc.stdout.close()


def logged_in(username: str) -> tuple[User, str]:
    """A new user, logged in: the user and its session cookie's value."""
    user = User.objects.create_user(username, password="pw")
    client = Client()
    client.force_login(user)
    return user, client.cookies[settings.SESSION_COOKIE_NAME].value


def sse_events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The events of a Server-Sent Events response, as field dicts."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
