"""The message log: one line for every message a client sends through a connection.

``message_log_format`` is a ``str.format`` template with ``{time}`` (UTC, ISO 8601),
``{type}`` (``publish``, ``send``, ``rpc``, or ``message`` for the simple WebSocket),
``{channel}``, ``{client}``, ``{user}``, ``{remote_addr}``, ``{message}`` and the request's
headers as ``{headers[user-agent]}`` (any case; a missing header is empty). Lines go to the
``tidings.messages`` logger at INFO. Line breaks in a message are written as ``\\n``, so a
client can't forge log lines.
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any

from tidings.exceptions import ConfigError

if TYPE_CHECKING:
    from .conn import Conn

__all__ = ["FIELDS", "MessageLog"]

log = logging.getLogger("tidings.messages")

FIELDS = ("time", "type", "channel", "client", "user", "remote_addr", "message", "headers")


class _Headers(dict[str, str]):
    """Request headers looked up in any case; missing ones are empty."""

    def __getitem__(self, name: str) -> str:
        return dict.get(self, name.lower(), "")


class MessageLog:
    """Writes one line per client message in ``template``'s format."""

    __slots__ = ("template",)

    def __init__(self, template: str) -> None:
        self.template = template
        try:
            self.render(dict.fromkeys(FIELDS[:-1], ""), {})
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"message_log_format: {exc!r}; placeholders: "
                + ", ".join("{" + f + "}" for f in FIELDS[:-1])
                + ", {headers[name]}"
            ) from None

    def render(self, fields: dict[str, Any], headers: dict[str, str]) -> str:
        return self.template.format(**fields, headers=_Headers(headers))

    def write(self, kind: str, conn: Conn, channel: str | None, data: bytes) -> None:
        text = data.decode("utf-8", "replace").replace("\r", "\\r").replace("\n", "\\n")
        fields = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "type": kind,
            "channel": channel or "",
            "client": conn.id,
            "user": conn.user,
            "remote_addr": conn.remote_addr,
            "message": text,
        }
        log.info("%s", self.render(fields, conn.headers))
