"""``send_event`` and ``publish`` for Django code, and their asyncio twins.

Data is encoded with Django's ``DjangoJSONEncoder`` (dates, times, ``Decimal``, ``UUID``,
lazy translations) when the call is made, so an object changed later, or one that can't be
encoded, is caught in the view that published it. Inside ``transaction.atomic()`` the
publication waits for the commit (``transaction.on_commit``): a rolled-back transaction
publishes nothing, and subscribers never see data the database doesn't hold yet. A
publication that fails after the commit is logged (the commit stands); for events that must
not be lost, write them to the outbox (``tidings.contrib.django.outbox``) instead.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, transaction

from tidings.client.publisher import Publisher, PublishResult

from .conf import tidings_settings

__all__ = [
    "apublish",
    "asend_event",
    "django_json",
    "get_publisher",
    "publish",
    "send_event",
    "set_publisher",
]

log = logging.getLogger("tidings.django")

_lock = threading.Lock()
_publishers: dict[tuple[str, str], Publisher] = {}
_override: Publisher | None = None


def django_json(data: Any) -> bytes:
    """JSON as Django writes it (``DjangoJSONEncoder``); the Publisher's ``json_encoder``."""
    return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def get_publisher() -> Publisher:
    """The process's ``Publisher`` for ``TIDINGS["URL"]`` and ``TIDINGS["API_KEY"]``
    (one per URL and key, made on first use), or the one ``set_publisher`` gave."""
    if _override is not None:
        return _override
    conf = tidings_settings()
    key = (str(conf["URL"]), str(conf["API_KEY"]))
    with _lock:
        publisher = _publishers.get(key)
        if publisher is None:
            publisher = Publisher(key[0], key[1], json_encoder=django_json)
            _publishers[key] = publisher
        return publisher


def set_publisher(publisher: Publisher | None) -> Publisher | None:
    """Route every publish through ``publisher`` (None: back to the settings' one);
    returns the one it replaces. For tests: see ``tidings.contrib.django.testing``."""
    global _override
    with _lock:
        previous, _override = _override, publisher
    return previous


def _encode(data: Any) -> tuple[bytes | str, bool]:
    """The payload and whether it is JSON: ``str`` and ``bytes`` go as they are."""
    if isinstance(data, str | bytes):
        return data, False
    return django_json(data), True


def publish(
    channel: str,
    data: Any,
    event: str | None = None,
    *,
    on_commit: bool | None = None,
    using: str | None = None,
) -> PublishResult | None:
    """Publish ``data`` to ``channel``. Inside ``transaction.atomic()`` (of the database
    ``using``), after the commit unless ``on_commit=False`` (default ``TIDINGS["ON_COMMIT"]``),
    and then it returns None; otherwise at once, returning where it landed."""
    payload, is_json = _encode(data)
    # Drawn now: a retry of this one publication never publishes twice.
    key = uuid.uuid4().hex
    alias = using or DEFAULT_DB_ALIAS
    wait = tidings_settings()["ON_COMMIT"] if on_commit is None else on_commit

    def send() -> PublishResult:
        return get_publisher().publish(
            channel, payload, event=event, raw=is_json, idempotency_key=key
        )

    if wait and transaction.get_connection(alias).in_atomic_block:

        def after_commit() -> None:
            try:
                send()
            except Exception:
                log.exception("publish to %s after the commit failed", channel)

        transaction.on_commit(after_commit, using=alias)
        return None
    return send()


def send_event(
    event: str,
    data: Any,
    channel: str = "default",
    *,
    on_commit: bool | None = None,
    using: str | None = None,
) -> PublishResult | None:
    """``publish(channel, data, event=event)`` in django-sse's argument order."""
    return publish(channel, data, event, on_commit=on_commit, using=using)


async def apublish(channel: str, data: Any, event: str | None = None) -> PublishResult:
    """``publish`` from an async view: at once (Django has no transaction in async code)."""
    payload, is_json = _encode(data)
    return await get_publisher().apublish(
        channel, payload, event=event, raw=is_json, idempotency_key=uuid.uuid4().hex
    )


async def asend_event(event: str, data: Any, channel: str = "default") -> PublishResult:
    """``send_event`` from an async view."""
    return await apublish(channel, data, event)
