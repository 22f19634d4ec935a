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
    ├── Reject                a hook refuses the action: its code and reason reach the client
    ├── HookError             a hook failed or timed out: answered as an internal error
    ├── ApiError              a server API call answered with a protocol error code
    ├── BrokerError           the broker failed a call; nothing was half done
    │   └── BrokerUnavailable the broker can't be reached or timed out: try again later
    ├── ControlError          a command for another node could not be delivered or answered
    ├── PublishError          the Publisher could not publish: refused, or not reached
    │   ├── Unauthorized      missing or wrong API key
    │   └── NoSuchConnection  ``send`` to a connection that exists on no node
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
    "HookError",
    "HttpError",
    "InvalidChannel",
    "InvalidPayload",
    "InvalidPosition",
    "InvalidToken",
    "NoSuchConnection",
    "ProtocolError",
    "PublishError",
    "Reject",
    "ReplyError",
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


class Reject(TidingsError):
    """Raised by a hook to refuse the action (a connect, a subscribe, a publish, an RPC…).

    ``code`` 100-1999 answers the command with that error (Centrifugo keeps 400-1999 for
    applications); 3000-4999 closes the connection with that code (4000-4499: the client
    may reconnect, 4500-4999: it should not). ``reason`` is the hook's own text and reaches
    the client."""

    def __init__(self, code: int, reason: str = "") -> None:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError("Reject code must be an integer")
        if not (100 <= code <= 1999 or 3000 <= code <= 4999):
            raise ValueError(f"Reject code {code}: use 100-1999 (error) or 3000-4999 (close)")
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def closes(self) -> bool:
        """Whether the code closes the connection rather than answering an error."""
        return self.code >= 3000


class HookError(TidingsError):
    """A hook raised something other than ``Reject``, or did not finish in time. The hook's
    exception is logged and given to ``on_error``; the client gets an internal error."""


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


class NoSuchConnection(PublishError):
    """``send`` to a connection id that no node holds (never existed, or closed)."""


class HttpError(TidingsError):
    """An HTTP request that gets an error status; ``reason`` is safe to show the client,
    and so is ``code`` (a hook's ``Reject`` code), answered with it when given."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
        *,
        code: int | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []
        self.code = code


class ProtocolError(TidingsError):
    """The peer broke a wire protocol."""


class WebSocketError(ProtocolError):
    """A WebSocket opening handshake that can't be accepted (RFC 6455 §4.2.1)."""
