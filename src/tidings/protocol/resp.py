"""RESP commands as bytes: what tidings sends to Redis on its own connections.

A command is an array of bulk strings
(https://redis.io/docs/latest/develop/reference/protocol-spec/#arrays); several commands
written back to back are a pipeline, answered in order. Arguments are bytes, or anything
whose ``str()`` is the argument (text, integers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["encode_command", "encode_commands"]


def encode_command(*args: Any) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(parts)


def encode_commands(commands: Iterable[Sequence[Any]]) -> bytes:
    """Commands back to back: one write for a whole pipeline."""
    parts: list[bytes] = []
    append = parts.append
    for args in commands:
        append(b"*%d\r\n" % len(args))
        for arg in args:
            raw = arg if isinstance(arg, bytes) else str(arg).encode()
            append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(parts)
