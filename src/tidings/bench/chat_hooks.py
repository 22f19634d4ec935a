"""The hooks of ``tidings bench chat``: every message a ``/ws`` client sends to a room goes
through ``on_message`` and ``broadcast_channel`` to everyone else in it."""

from __future__ import annotations

from typing import Any

from tidings import hooks
from tidings.core.conn import Conn

__all__ = ["chat_async", "chat_plain"]


@hooks.on_message(channel=r"^async-")
async def chat_async(conn: Conn, context: dict[str, Any], channel: str, message: Any) -> None:
    conn.broadcast_channel(message, channel)


@hooks.on_message(channel=r"^plain-")
def chat_plain(conn: Conn, context: dict[str, Any], channel: str, message: Any) -> None:
    conn.broadcast_channel(message, channel)
