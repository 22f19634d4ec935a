"""The transactional outbox's table: events written with the data they describe."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import models

__all__ = ["OutboxMessage", "new_key"]


def new_key() -> str:
    """A row's idempotency key: the hub publishes it once, however often it is sent."""
    return uuid.uuid4().hex


class OutboxMessage(models.Model):
    """One publication waiting for (or done with) delivery; ``outbox.enqueue`` writes it."""

    channel: models.CharField[str, str] = models.CharField(max_length=255)
    event: models.CharField[str | None, str | None] = models.CharField(
        max_length=64, null=True, blank=True
    )
    payload: models.TextField[str, str] = models.TextField()
    is_json: models.BooleanField[bool, bool] = models.BooleanField(default=True)
    key: models.CharField[str, str] = models.CharField(max_length=64, unique=True, default=new_key)
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now_add=True)
    delivered_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    attempts: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(default=0)
    last_error: models.CharField[str, str] = models.CharField(
        max_length=500, blank=True, default=""
    )

    class Meta:
        app_label = "tidings"
        db_table = "tidings_outbox"
        ordering = ["id"]
        indexes = [
            # The deliverer's query: the rows not delivered yet, oldest first.
            models.Index(
                fields=["id"],
                name="tidings_outbox_pending",
                condition=models.Q(delivered_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        state = "delivered" if self.delivered_at else "pending"
        return f"{self.channel} #{self.pk} ({state})"
