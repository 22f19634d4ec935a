"""``python manage.py tidings``: the hub, with the project's settings and hooks loaded."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from tidings.cli import serve_config
from tidings.exceptions import ConfigError

from ...outbox import OutboxDeliverer
from ...server import hub_config

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Run the tidings hub with this project's TIDINGS setting and hooks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", help="address to bind (default: TIDINGS['URL']'s)")
        parser.add_argument("--port", type=int, help="port (default: TIDINGS['URL']'s)")
        parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
        parser.add_argument(
            "--allowed-origin", action="append", help="allowed browser Origin (repeatable)"
        )
        parser.add_argument(
            "--outbox",
            metavar="DATABASE",
            nargs="?",
            const=DEFAULT_DB_ALIAS,
            help="also deliver the outbox of this database alias (default: default)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = hub_config(
                host=options["host"],
                port=options["port"],
                log_level=options["log_level"],
                allowed_origins=options["allowed_origin"] or None,
            )
        except ConfigError as exc:
            raise CommandError(f"configuration error: {exc}") from None
        if options["outbox"] and config.workers > 1:
            # The workers are forked, which a process with a running thread must not do.
            raise CommandError(
                "--outbox needs a single-process hub (workers = 1); run "
                "`manage.py tidings_outbox` beside the workers"
            )
        stop = threading.Event()
        if options["outbox"]:
            deliverer = OutboxDeliverer(options["outbox"])
            thread = threading.Thread(target=deliverer.run, args=(stop,), name="tidings-outbox")
            thread.start()
        try:
            code = serve_config(config)
        finally:
            stop.set()
        if code:
            raise CommandError(f"the hub stopped with status {code}", returncode=code)
