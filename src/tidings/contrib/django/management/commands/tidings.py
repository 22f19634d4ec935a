"""``python manage.py tidings``: the hub, with the project's settings and hooks loaded."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tidings.cli import serve_config
from tidings.exceptions import ConfigError

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
        code = serve_config(config)
        if code:
            raise CommandError(f"the hub stopped with status {code}", returncode=code)
