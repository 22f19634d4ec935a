"""The transactional outbox: written with the transaction, delivered exactly once, in order,
after the hub comes back; LISTEN/NOTIFY on the machine's PostgreSQL, polling elsewhere."""

from __future__ import annotations

import logging
import threading
from typing import Any
from unittest import mock

import httpx
import pytest
from django.core.management import call_command
from django.db import connections, transaction

from tidings.client.publisher import Publisher, PublishResult
from tidings.contrib.django.models import OutboxMessage
from tidings.contrib.django.outbox import OutboxDeliverer, enqueue
from tidings.contrib.django.testing import record_publications
from tidings.testing import TIMEOUT
from tidings.testing.publisher import RecordingPublisher

PG = pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
SQLITE = pytest.mark.django_db(transaction=True)


def pending(using: str) -> list[str]:
    return list(
        OutboxMessage.objects.using(using)
        .filter(delivered_at__isnull=True)
        .values_list("channel", flat=True)
    )


@pytest.mark.parametrize(
    "using", [pytest.param("postgres", marks=PG), pytest.param("default", marks=SQLITE)]
)
def test_rows_live_and_die_with_the_transaction_and_go_out_once(using: str) -> None:
    with transaction.atomic(using=using):
        enqueue("orders", {"order": 1}, event="paid", using=using)
        enqueue("orders", "plain text", using=using)
    with pytest.raises(RuntimeError), transaction.atomic(using=using):
        enqueue("orders", {"order": 2}, using=using)
        raise RuntimeError("rolled back")
    assert pending(using) == ["orders", "orders"]
    recorder = RecordingPublisher()
    deliverer = OutboxDeliverer(using, publisher=recorder)
    assert deliverer.deliver() == 2
    assert [(p.data, p.event, p.is_json) for p in recorder.publications] == [
        ({"order": 1}, "paid", True),
        ("plain text", None, False),
    ]
    keys = set(OutboxMessage.objects.using(using).values_list("key", flat=True))
    assert {p.idempotency_key for p in recorder.publications} == keys
    assert deliverer.deliver() == 0 and pending(using) == []


@PG
def test_a_crash_between_publish_and_mark_publishes_once_on_the_hub(hub: str) -> None:
    for n in range(3):
        enqueue("crash", {"n": n}, using="postgres")
    deliverer = OutboxDeliverer("postgres")
    real_mark = deliverer.mark_delivered
    calls = {"n": 0}

    def crash_on_second(row: OutboxMessage) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise SystemExit("killed after the publish, before the mark")
        real_mark(row)

    with mock.patch.object(deliverer, "mark_delivered", crash_on_second), pytest.raises(SystemExit):
        deliverer.deliver()
    # The batch's transaction rolled back: rows 1 and 2 were published and wait again.
    assert len(pending("postgres")) == 3
    assert OutboxDeliverer("postgres").deliver() == 3
    with httpx.Client(timeout=TIMEOUT) as http:
        info = http.get(f"{hub}/pub/crash", headers={"X-API-Key": "test-key"}).json()
    assert info["offset"] == 3  # three rows, three publications: the keys kept them once
    assert pending("postgres") == []


@PG
def test_rows_wait_while_the_hub_is_down_then_go_out_in_order(hub: str) -> None:
    for n in range(4):
        enqueue(f"down-{n % 2}", {"n": n}, using="postgres")
    down = Publisher("http://127.0.0.1:9", "test-key", retries=0)
    assert OutboxDeliverer("postgres", publisher=down).deliver() == 0
    first = OutboxMessage.objects.using("postgres").order_by("id").first()
    assert first is not None and first.attempts == 1 and "can't reach" in first.last_error
    assert len(pending("postgres")) == 4
    with record_publications() as recorder:
        assert OutboxDeliverer("postgres").deliver() == 4
    assert recorder.on("down-0") == [{"n": 0}, {"n": 2}]
    assert recorder.on("down-1") == [{"n": 1}, {"n": 3}]


class Signalling(RecordingPublisher):
    """Records, and sets ``published`` on each publish."""

    def __init__(self) -> None:
        super().__init__()
        self.published = threading.Event()

    def publish(self, *args: Any, **kwargs: Any) -> PublishResult:
        result = super().publish(*args, **kwargs)
        self.published.set()
        return result


@pytest.mark.parametrize(
    ("using", "poll"),
    [pytest.param("postgres", 3600.0, marks=PG), pytest.param("default", 0.05, marks=SQLITE)],
)
def test_the_running_deliverer_picks_up_new_rows(using: str, poll: float) -> None:
    # An hour's poll on PostgreSQL: only the NOTIFY of the commit can wake it in time.
    publisher = Signalling()
    deliverer = OutboxDeliverer(using, publisher=publisher, poll_interval=poll)
    stop = threading.Event()
    thread = threading.Thread(target=deliverer.run, args=(stop,))
    thread.start()
    try:
        with transaction.atomic(using=using):
            enqueue("live", {"hello": using}, using=using)
        assert publisher.published.wait(TIMEOUT)
        assert publisher.on("live") == [{"hello": using}]
    finally:
        stop.set()
        if using == "postgres":  # wake the listener so it sees stop
            with transaction.atomic(using=using):
                enqueue("live", {"bye": True}, using=using)
        thread.join(TIMEOUT)
    assert not thread.is_alive()


@PG
def test_the_management_command_delivers_once() -> None:
    enqueue("cmd", {"n": 1}, using="postgres")
    with record_publications() as recorder:
        call_command("tidings_outbox", "--once", "--database", "postgres")
        call_command("tidings_outbox", "--once", "--database", "postgres")
    assert recorder.on("cmd") == [{"n": 1}]


@PG
def test_a_lost_listen_connection_is_made_again() -> None:
    publisher = Signalling()
    failed = _LogSeen("outbox listener failed")
    outbox_log = logging.getLogger("tidings.django.outbox")
    outbox_log.addHandler(failed)
    deliverer = OutboxDeliverer("postgres", publisher=publisher, poll_interval=3600.0)
    stop = threading.Event()
    thread = threading.Thread(target=deliverer.run, args=(stop,))
    thread.start()
    try:
        with transaction.atomic(using="postgres"):
            enqueue("relisten", {"n": 1}, using="postgres")
        assert publisher.published.wait(TIMEOUT)
        publisher.published.clear()
        # The server ends the listener's session, as a restart or a failover would.
        with connections["postgres"].cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
            )
            assert cursor.fetchone() is not None
        # Committed while the session dies: its NOTIFY may still arrive on the dying
        # session, or the row is found when the listener, connected again, catches up.
        with transaction.atomic(using="postgres"):
            enqueue("relisten", {"n": 2}, using="postgres")
        assert publisher.published.wait(TIMEOUT)
        assert failed.seen.wait(TIMEOUT)  # the loss was noticed (and logged) ...
        publisher.published.clear()
        with transaction.atomic(using="postgres"):
            enqueue("relisten", {"n": 3}, using="postgres")
        assert publisher.published.wait(TIMEOUT)  # ... and the new session hears NOTIFY
        assert publisher.on("relisten") == [{"n": 1}, {"n": 2}, {"n": 3}]
    finally:
        outbox_log.removeHandler(failed)
        stop.set()
        with transaction.atomic(using="postgres"):
            enqueue("relisten", {"bye": True}, using="postgres")
        thread.join(TIMEOUT)
    assert not thread.is_alive()


class _LogSeen(logging.Handler):
    """Sets ``seen`` when a record whose message contains ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()
