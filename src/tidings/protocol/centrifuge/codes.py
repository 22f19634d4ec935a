"""Error, unsubscribe and disconnect codes of the client protocol, as clients interpret them.

Errors (100-113) answer a command. Unsubscribe codes: 2000 is final, 2500 and above make
the client resubscribe. Disconnect codes 3000-3499 (and application codes 4000-4499) let
the client reconnect; 3500-3999 (and 4500-4999) tell it not to.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ALREADY_SUBSCRIBED",
    "BAD_REQUEST",
    "BAD_REQUEST_DISCONNECT",
    "CHANNEL_LIMIT",
    "CONNECTION_CLOSED",
    "CONNECTION_EXPIRED",
    "CONNECTION_LIMIT",
    "EXPIRED",
    "FORCE_DISCONNECT",
    "FORCE_RECONNECT",
    "INAPPROPRIATE_PROTOCOL",
    "INSUFFICIENT_STATE",
    "INTERNAL",
    "INVALID_TOKEN",
    "LIMIT_EXCEEDED",
    "METHOD_NOT_FOUND",
    "NOT_AVAILABLE",
    "NOT_AVAILABLE_DISCONNECT",
    "NO_PONG",
    "PERMISSION_DENIED",
    "PERMISSION_DENIED_DISCONNECT",
    "SERVER_ERROR",
    "SHUTDOWN",
    "SLOW",
    "STALE",
    "STATE_INVALIDATED",
    "SUBSCRIPTION_EXPIRED",
    "TOKEN_EXPIRED",
    "TOO_MANY_ERRORS",
    "TOO_MANY_REQUESTS",
    "TOO_MANY_REQUESTS_DISCONNECT",
    "UNAUTHORIZED",
    "UNKNOWN_CHANNEL",
    "UNRECOVERABLE_POSITION",
    "UNSUBSCRIBE_EXPIRED",
    "UNSUBSCRIBE_INSUFFICIENT",
    "UNSUBSCRIBE_SERVER",
    "WRITE_ERROR",
    "Disconnect",
    "Error",
    "Unsubscribe",
]


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str
    temporary: bool = False

    def reply(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.temporary:
            body["temporary"] = True
        return body


INTERNAL = Error(100, "internal server error", True)
UNAUTHORIZED = Error(101, "unauthorized")
UNKNOWN_CHANNEL = Error(102, "unknown channel")
PERMISSION_DENIED = Error(103, "permission denied")
METHOD_NOT_FOUND = Error(104, "method not found")
ALREADY_SUBSCRIBED = Error(105, "already subscribed")
LIMIT_EXCEEDED = Error(106, "limit exceeded")
BAD_REQUEST = Error(107, "bad request")
NOT_AVAILABLE = Error(108, "not available")
TOKEN_EXPIRED = Error(109, "token expired")
EXPIRED = Error(110, "expired")
TOO_MANY_REQUESTS = Error(111, "too many requests", True)
UNRECOVERABLE_POSITION = Error(112, "unrecoverable position")


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    code: int
    reason: str


UNSUBSCRIBE_SERVER = Unsubscribe(2000, "server unsubscribe")
UNSUBSCRIBE_INSUFFICIENT = Unsubscribe(2500, "insufficient state")
UNSUBSCRIBE_EXPIRED = Unsubscribe(2501, "subscription expired")


@dataclass(frozen=True, slots=True)
class Disconnect:
    code: int
    reason: str

    @property
    def reconnect(self) -> bool:
        return 3000 <= self.code < 3500 or 4000 <= self.code < 4500


CONNECTION_CLOSED = Disconnect(3000, "connection closed")
SHUTDOWN = Disconnect(3001, "shutdown")
SERVER_ERROR = Disconnect(3004, "internal server error")
CONNECTION_EXPIRED = Disconnect(3005, "connection expired")
SUBSCRIPTION_EXPIRED = Disconnect(3006, "subscription expired")
SLOW = Disconnect(3008, "slow")
WRITE_ERROR = Disconnect(3009, "write error")
INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
FORCE_RECONNECT = Disconnect(3011, "force reconnect")
NO_PONG = Disconnect(3012, "no pong")
TOO_MANY_REQUESTS_DISCONNECT = Disconnect(3013, "too many requests")
STATE_INVALIDATED = Disconnect(3014, "state invalidated")
INVALID_TOKEN = Disconnect(3500, "invalid token")
BAD_REQUEST_DISCONNECT = Disconnect(3501, "bad request")
STALE = Disconnect(3502, "stale")
FORCE_DISCONNECT = Disconnect(3503, "force disconnect")
CONNECTION_LIMIT = Disconnect(3504, "connection limit")
CHANNEL_LIMIT = Disconnect(3505, "channel limit")
INAPPROPRIATE_PROTOCOL = Disconnect(3506, "inappropriate protocol")
PERMISSION_DENIED_DISCONNECT = Disconnect(3507, "permission denied")
NOT_AVAILABLE_DISCONNECT = Disconnect(3508, "not available")
TOO_MANY_ERRORS = Disconnect(3509, "too many errors")
