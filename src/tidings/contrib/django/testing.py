"""Recording what a Django project publishes, for its own tests.

``record_publications()`` routes ``send_event``/``publish`` (and the outbox's deliverer)
through a ``RecordingPublisher`` encoding as the real one does; the ``tidings_publications``
pytest fixture does the same for one test (``pytest_plugins =
["tidings.contrib.django.testing"]`` in a conftest.py)::

    def test_import_done(tidings_publications):
        finish_import(user)
        assert tidings_publications.on(f"user-{user.pk}") == [{"contacts": 120}]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tidings.testing.publisher import RecordingPublisher

from .publishing import django_json, set_publisher

__all__ = ["record_publications", "tidings_publications"]


@contextmanager
def record_publications() -> Iterator[RecordingPublisher]:
    """Within the block, every publication is recorded instead of sent."""
    recorder = RecordingPublisher(json_encoder=django_json)
    previous = set_publisher(recorder)
    try:
        yield recorder
    finally:
        set_publisher(previous)


@pytest.fixture
def tidings_publications() -> Iterator[RecordingPublisher]:
    """A ``RecordingPublisher`` that records what the test publishes."""
    with record_publications() as recorder:
        yield recorder
