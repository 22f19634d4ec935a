"""Fixtures of tidings' Django tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings
from tidings_test_helpers import django_process, free_port
from tidings_test_settings import PAGE_ORIGIN

# The fixture a project's tests get from `pytest_plugins = ["tidings.contrib.django.testing"]`.
from tidings.contrib.django.testing import tidings_publications

__all__ = ["hub", "tidings_publications"]


@pytest.fixture(scope="module")
def hub(django_db_setup: None) -> Iterator[str]:
    """A hub started as a project starts it (``manage.py tidings``), on the tests'
    database; publishing goes to it."""
    url = f"http://127.0.0.1:{free_port()}"
    with (
        django_process(["tidings", "--allowed-origin", PAGE_ORIGIN], url, "tidings serving on"),
        override_settings(TIDINGS={**settings.TIDINGS, "URL": url}),
    ):
        yield url
