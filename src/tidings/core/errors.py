"""Exceptions a client protocol command raises to answer with an error or a disconnect."""

from __future__ import annotations

from tidings.protocol.centrifuge import codes

__all__ = ["DisconnectError", "ReplyError"]


class ReplyError(Exception):
    """Answer the command with this protocol error."""

    def __init__(self, error: codes.Error) -> None:
        super().__init__(error.message)
        self.error = error


class DisconnectError(Exception):
    """Close the connection with this disconnect code."""

    def __init__(self, disconnect: codes.Disconnect) -> None:
        super().__init__(disconnect.reason)
        self.disconnect = disconnect
