"""Exceptions raised by tidings.

The tree::

    TidingsError
    ├── InvalidChannel        a channel name breaks the naming rules
    ├── InvalidPosition       a resume position (id, offset, epoch) can't be parsed
    ├── InvalidPayload        a JSON payload nested deeper than tidings carries
    ├── ConfigError           configuration that can't be used
    ├── TokenError            a JWT that can't be accepted
    │   ├── InvalidToken      bad signature, algorithm, audience, issuer, type or shape
    │   └── TokenExpired      a valid token past its ``exp``: refresh it
    ├── DecodeError           a client-protocol frame that can't be decoded (JSON, Protobuf)
    ├── CommandError          a client-protocol command refused; answered, never raised out
    │   ├── ReplyError        answer the command with this protocol error (code 100-113)
    │   └── DisconnectError   close the connection with this disconnect code (3000-4999)
    ├── RpcError              an application RPC handler's own error, sent to the caller
    ├── ApiError              a server API call answered with a protocol error code
    ├── BrokerError           the broker failed a call; nothing was half done
    │   └── BrokerUnavailable the broker can't be reached or timed out: try again later
    ├── ControlError          a command for another node could not be delivered or answered
    ├── PublishError          the Publisher could not publish: refused, or not reached
    │   └── Unauthorized      missing or wrong API key
    ├── HttpError             an HTTP request that gets an error status (carries it)
    └── ProtocolError         the peer broke a wire protocol
        └── WebSocketError    a WebSocket handshake that can't be accepted

Internal exception text never reaches a client: front ends answer with statuses and codes,
and the messages of these exceptions are written to be shown (``HttpError.reason``, the
protocol codes' own messages) or logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidings.protocol.centrifuge.codes import Disconnect, Error

__all__ = [
    "ApiError",
    "BrokerError",
    "BrokerUnavailable",
    "CommandError",
    "ConfigError",
    "ControlError",
    "DecodeError",
    "DisconnectError",
    "HttpError",
    "InvalidChannel",
    "InvalidPayload",
    "InvalidPosition",
    "InvalidToken",
    "ProtocolError",
    "PublishError",
    "ReplyError",
    "RpcError",
    "TidingsError",
    "TokenError",
    "TokenExpired",
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


class TokenError(TidingsError):
    """A token that can't be accepted."""


class InvalidToken(TokenError):
    """A token that can't be trusted: bad signature, algorithm, audience, issuer, type or
    shape."""


class TokenExpired(TokenError):
    """A valid token whose ``exp`` has passed: the client should refresh it."""


class DecodeError(TidingsError, ValueError):
    """A client-protocol frame that can't be decoded into commands."""


class CommandError(TidingsError):
    """A client-protocol command that is refused."""


class ReplyError(CommandError):
    """Answer the command with this protocol error."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.error = error


class DisconnectError(CommandError):
    """Close the connection with this disconnect code."""

    def __init__(self, disconnect: Disconnect) -> None:
        super().__init__(disconnect.reason)
        self.disconnect = disconnect


class RpcError(TidingsError):
    """Raised by an RPC handler to answer with an application error; its code and message
    are the handler's own and reach the caller."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ApiError(TidingsError):
    """A server API call answered with this protocol error."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.error = error


class BrokerError(TidingsError):
    """The broker failed a call; a failed publish published nothing."""


class BrokerUnavailable(BrokerError):
    """The broker can't be reached or didn't answer in time; the call may be retried."""


class ControlError(TidingsError):
    """A command for another node could not be delivered or answered."""


class PublishError(TidingsError):
    """The Publisher could not publish. ``status``: the server's HTTP status (0 when no
    answer came); ``reason``: the server's error text, or what failed on the way;
    ``retryable``: a transient failure (unreachable, timed out, 5xx, 408, 429) that a retry
    may get past — safe only with an idempotency key, which the Publisher uses for its own
    retries."""

    def __init__(
        self, message: str, status: int = 0, *, reason: str = "", retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or message
        self.retryable = retryable


class Unauthorized(PublishError):
    """Missing or wrong API key."""


class HttpError(TidingsError):
    """An HTTP request that gets an error status; ``reason`` is safe to show the client."""

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []


class ProtocolError(TidingsError):
    """The peer broke a wire protocol."""


class WebSocketError(ProtocolError):
    """A WebSocket opening handshake that can't be accepted (RFC 6455 §4.2.1)."""
