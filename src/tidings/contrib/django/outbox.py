"""The transactional outbox: events that must not be lost, delivered exactly once.

``enqueue(channel, data)`` writes an ``OutboxMessage`` row in the caller's transaction, so
the event exists exactly when the data it describes does. The deliverer
(``python manage.py tidings_outbox``, or ``manage.py tidings --outbox``) publishes the rows
oldest first, each with its row's idempotency key, and marks a row delivered only after the
hub acknowledged it. A crash between the publish and the mark sends the row again with the
same key, and the hub answers with the first publication instead of publishing twice (within
its ``idempotency_ttl``, 300 s by default). While the hub is down, rows wait; a failed row
stops the batch, so each channel's events go out in order.

On PostgreSQL ``enqueue`` also sends ``NOTIFY tidings_outbox`` (delivered at the commit,
never for a rollback) and the deliverer ``LISTEN``s, so a row goes out at once; it polls as
well (``OUTBOX_POLL_INTERVAL``), which is all it does on other databases.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from tidings.client.publisher import Publisher
from tidings.exceptions import PublishError

from .conf import tidings_settings
from .models import OutboxMessage
from .publishing import django_json, get_publisher

__all__ = ["NOTIFY_CHANNEL", "RECONNECT_DELAY", "OutboxDeliverer", "enqueue"]

log = logging.getLogger("tidings.django.outbox")

NOTIFY_CHANNEL = "tidings_outbox"
RECONNECT_DELAY = 1.0  # seconds before listening again after the LISTEN connection broke


def _is_postgres(using: str) -> bool:
    return connections[using].vendor == "postgresql"


def enqueue(
    channel: str, data: Any, event: str | None = None, *, using: str | None = None
) -> OutboxMessage:
    """Write ``data`` for ``channel`` to the outbox of database ``using``, in the current
    transaction (if any); encoded now, with Django's JSON encoder unless it is ``str``."""
    alias = using or DEFAULT_DB_ALIAS
    is_json = not isinstance(data, str)
    payload = django_json(data).decode() if is_json else data
    row = OutboxMessage.objects.using(alias).create(
        channel=channel, event=event, payload=payload, is_json=is_json
    )
    if _is_postgres(alias):
        with connections[alias].cursor() as cursor:
            cursor.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return row


class OutboxDeliverer:
    """Delivers the outbox of database ``using`` through ``publisher`` (default: the
    project's). ``deliver()`` once; ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        using: str = DEFAULT_DB_ALIAS,
        *,
        publisher: Publisher | None = None,
        poll_interval: float | None = None,
        batch: int | None = None,
    ) -> None:
        conf = tidings_settings()
        self.using = using
        self.publisher = publisher
        self.poll_interval = float(
            conf["OUTBOX_POLL_INTERVAL"] if poll_interval is None else poll_interval
        )
        self.batch = int(conf["OUTBOX_BATCH"] if batch is None else batch)
        if self.poll_interval <= 0 or self.batch <= 0:
            raise ValueError("OutboxDeliverer: poll_interval > 0 and batch > 0")

    def deliver(self) -> int:
        """Publish pending rows until none is left or one fails; how many went out."""
        sent = 0
        while True:
            done, more = self._deliver_batch()
            sent += done
            if not more:
                return sent

    def _deliver_batch(self) -> tuple[int, bool]:
        publisher = self.publisher or get_publisher()
        sent = 0
        with transaction.atomic(using=self.using):
            # Row locks keep a second deliverer waiting instead of sending the same rows
            # (out of order) beside this one.
            rows = list(
                OutboxMessage.objects.using(self.using)
                .select_for_update()
                .filter(delivered_at__isnull=True)
                .order_by("id")[: self.batch]
            )
            for row in rows:
                try:
                    publisher.publish(
                        row.channel,
                        row.payload,
                        event=row.event,
                        raw=row.is_json,
                        idempotency_key=row.key,
                    )
                except PublishError as exc:
                    log.warning("outbox row %d for %s waits: %s", row.pk, row.channel, exc)
                    self._failed(row, str(exc))
                    return sent, False
                self.mark_delivered(row)
                sent += 1
        return sent, len(rows) == self.batch

    def mark_delivered(self, row: OutboxMessage) -> None:
        """The hub acknowledged ``row``."""
        row.delivered_at = timezone.now()
        row.attempts += 1
        row.save(using=self.using, update_fields=["delivered_at", "attempts"])

    def _failed(self, row: OutboxMessage, error: str) -> None:
        # Committed with the batch: the rows before this one stay delivered.
        OutboxMessage.objects.using(self.using).filter(pk=row.pk).update(
            attempts=row.attempts + 1, last_error=error[:500]
        )

    def run(self, stop: threading.Event) -> None:
        """Deliver, then wait for a notification or the poll interval, until ``stop``."""
        while not stop.is_set():
            try:
                with self._listener() as wait:
                    while not stop.is_set():
                        try:
                            self.deliver()
                        except Exception:  # the database away: log, wait, try again
                            log.exception("outbox delivery failed")
                        wait(stop)
            except Exception:  # the LISTEN connection lost: connect again, then deliver
                log.exception("outbox listener failed; listening again")
                stop.wait(min(self.poll_interval, RECONNECT_DELAY))
        connections[self.using].close()

    @contextmanager
    def _listener(self) -> Iterator[Any]:
        """A ``wait(stop)`` that returns on a NOTIFY (PostgreSQL) or after the interval."""
        if not _is_postgres(self.using):
            yield lambda stop: stop.wait(self.poll_interval)
            return
        import psycopg

        settings = connections[self.using].settings_dict
        params = {
            "dbname": settings["NAME"],
            "user": settings.get("USER") or None,
            "password": settings.get("PASSWORD") or None,
            "host": settings.get("HOST") or None,
            "port": settings.get("PORT") or None,
        }
        with psycopg.connect(
            **{k: v for k, v in params.items() if v is not None}, autocommit=True
        ) as listen:
            listen.execute(f"LISTEN {NOTIFY_CHANNEL}")

            def wait(stop: threading.Event) -> None:
                # One notification is enough: deliver() takes every pending row.
                for _ in listen.notifies(timeout=self.poll_interval, stop_after=1):
                    pass

            yield wait
