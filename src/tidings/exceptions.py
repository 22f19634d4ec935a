"""Exceptions raised by tidings.

The tree::

    TidingsError
    ├── InvalidChannel        a channel name breaks the naming rules
    ├── InvalidPosition       a resume position (id, offset, epoch) can't be parsed
    ├── InvalidPayload        a JSON payload nested deeper than tidings carries
    ├── ConfigError           configuration that can't be used
    ├── PublishError          a publication was refused (client side: by the server)
    │   └── Unauthorized      missing or wrong API key
    └── ProtocolError         the peer broke a wire protocol (HTTP, WebSocket)
        ├── HttpError         an HTTP request that gets an error status (carries it)
        └── WebSocketError    a WebSocket handshake that can't be accepted

Internal exception text never reaches a client: front ends answer with statuses and codes.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "HttpError",
    "InvalidChannel",
    "InvalidPayload",
    "InvalidPosition",
    "ProtocolError",
    "PublishError",
    "TidingsError",
    "Unauthorized",
    "WebSocketError",
]


class TidingsError(Exception):
    """Base class of every exception tidings raises on purpose."""


class InvalidChannel(TidingsError, ValueError):
    """A channel name breaks the naming rules."""


class InvalidPosition(TidingsError, ValueError):
    """A resume position can't be parsed."""


class InvalidPayload(TidingsError, ValueError):
    """A JSON payload nested deeper than ``envelope.MAX_JSON_DEPTH`` levels."""


class ConfigError(TidingsError, ValueError):
    """Configuration that can't be used."""


class PublishError(TidingsError):
    """A publication was refused."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(PublishError):
    """Missing or wrong API key."""


class ProtocolError(TidingsError):
    """The peer broke a wire protocol."""


class HttpError(ProtocolError):
    """An HTTP request that gets an error status; ``reason`` is safe to show the client."""

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []


class WebSocketError(ProtocolError):
    """A WebSocket opening handshake that can't be accepted (RFC 6455 §4.2.1)."""
