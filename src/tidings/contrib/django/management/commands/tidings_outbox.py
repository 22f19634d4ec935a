"""``python manage.py tidings_outbox``: deliver the transactional outbox."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DEFAULT_DB_ALIAS

from ...outbox import OutboxDeliverer

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Publish the outbox's rows through the tidings hub, exactly once, in order."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias")
        parser.add_argument("--once", action="store_true", help="deliver what waits, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        deliverer = OutboxDeliverer(options["database"])
        if options["once"]:
            sent = deliverer.deliver()
            self.stdout.write(f"tidings_outbox: {sent} delivered")
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write("tidings_outbox: delivering", ending="\n")
        self.stdout.flush()
        deliverer.run(stop)
