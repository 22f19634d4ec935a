"""Fixtures of tidings' Django tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from tidings_test_settings import PAGE_ORIGIN

# The fixture a project's tests get from `pytest_plugins = ["tidings.contrib.django.testing"]`.
from tidings.contrib.django.testing import tidings_publications
from tidings.testing import TIMEOUT

__all__ = ["free_port", "hub", "tidings_publications"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def hub(django_db_setup: None) -> Iterator[str]:
    """A hub started as a project starts it, on the tests' database."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tidings_test_settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests" / "contrib_django")]),
        "TIDINGS_TEST_DB": str(settings.DATABASES["default"]["NAME"]),
        "TIDINGS_TEST_URL": url,
    }
    command = [sys.executable, "-m", "django", "tidings", "--allowed-origin", PAGE_ORIGIN]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # bounded by pytest-timeout if it never comes up
        seen.append(line)
        if line.startswith("tidings serving on"):
            break
    else:
        proc.wait()
        pytest.fail("the hub did not start:\n" + "".join(seen))
    try:
        with override_settings(TIDINGS={**settings.TIDINGS, "URL": url}):
            yield url
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)
        proc.stdout.close()
