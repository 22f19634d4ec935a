"""Channel names and the options each namespace gives its channels.

A channel is ``namespace:name`` or just ``name`` (the default namespace; a leading ``$``
marks a private channel and is not part of the namespace). Names are at most 255
characters of letters, digits and ``_ - . : @ / = ! ~ # $ ,``; a comma only in the user list
of a user-limited channel (``dialog#42,43``), since the simple endpoints use it to list
channels. The namespace is the text before the first ``:``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

from tidings.exceptions import ConfigError, InvalidChannel

__all__ = [
    "MAX_CHANNEL_LENGTH",
    "ChannelOptions",
    "Namespaces",
    "namespace_of",
    "validate_channel",
]

MAX_CHANNEL_LENGTH = 255
_ALLOWED = re.compile(r"[A-Za-z0-9_\-.:@/=!~#$,]+")


def validate_channel(name: str) -> str:
    """Return ``name`` if it is a valid channel name, else raise ``InvalidChannel``."""
    if not name:
        raise InvalidChannel("channel name is empty")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise InvalidChannel(f"channel name longer than {MAX_CHANNEL_LENGTH} characters")
    if not _ALLOWED.fullmatch(name):
        raise InvalidChannel("channel name has characters outside A-Z a-z 0-9 _-.:@/=!~#$,")
    if "," in name and "#" not in name.split(",")[0]:
        raise InvalidChannel("',' is only allowed in a user list after '#' (dialog#42,43)")
    if name.startswith(":") or name.endswith(":"):
        raise InvalidChannel("channel name can't start or end with ':'")
    return name


def namespace_of(channel: str) -> str:
    """The namespace part of a channel name, ``""`` for the default namespace. The ``$``
    of a private channel is not part of it: ``$chat:x`` is in ``chat`` (as in Centrifugo)."""
    ns, sep, _ = channel.removeprefix("$").partition(":")
    return ns if sep else ""


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """What a namespace allows and keeps. ``history_ttl`` is in seconds.

    The ``allow_*`` options concern the client protocol (Centrifugo-compatible): which
    connections may subscribe, publish, read history and presence without a server's say.
    "client" means any connection with a user id, "anonymous" one without, "subscriber" a
    connection subscribed to the channel.
    """

    history_size: int = 100
    history_ttl: float = 600.0
    history_meta_ttl: float = 86400.0  # a stream's offset and epoch outlive its history
    force_recovery: bool = False
    allow_recovery: bool = False
    force_positioning: bool = False
    allow_positioning: bool = False
    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    allow_subscribe_for_client: bool = False
    allow_subscribe_for_anonymous: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_client: bool = False
    allow_publish_for_anonymous: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_client: bool = False
    allow_history_for_anonymous: bool = False
    allow_presence_for_subscriber: bool = False
    allow_presence_for_client: bool = False
    allow_presence_for_anonymous: bool = False
    allow_user_limited_channels: bool = False
    allowed_delta_types: tuple[str, ...] = ()
    delta_publish: bool = False
    # The simple endpoints (/ws, /sse, /stream, /lp) subscribe without any credentials.
    # True for channels without a namespace and of unconfigured namespaces (the zero-config
    # hub); a configured namespace is closed to them unless it says so.
    simple_subscribe: bool = True
    # What a /ws client sends is published to the channel (nginx-push-stream's
    # websocket_allow_publish): off unless a namespace says so.
    simple_publish: bool = False
    # HTTP proxies of this namespace's channels (tidings.proxy): URLs, "" for none.
    proxy_subscribe_endpoint: str = ""
    proxy_publish_endpoint: str = ""
    proxy_sub_refresh_endpoint: str = ""
    proxy_unsubscribe_endpoint: str = ""


class Namespaces:
    """Options per namespace; channels outside a configured namespace get the defaults."""

    def __init__(
        self, default: ChannelOptions | None = None, named: dict[str, ChannelOptions] | None = None
    ) -> None:
        self.default = default or ChannelOptions()
        self.named = dict(named or {})

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Namespaces:
        """Build from configuration: top-level keys are defaults, ``namespaces`` a table."""
        known = {f.name for f in fields(ChannelOptions)}
        base = _options(ChannelOptions(), {k: v for k, v in data.items() if k in known})
        named = {}
        for name, opts in dict(data.get("namespaces", {})).items():
            if not isinstance(opts, dict):
                raise ConfigError(f"namespace {name!r}: expected a table of options")
            unknown = set(opts) - known
            if unknown:
                raise ConfigError(f"namespace {name!r}: unknown options {sorted(unknown)}")
            named[str(name)] = _options(base, {"simple_subscribe": False, **opts})
        return cls(base, named)

    def options(self, channel: str) -> ChannelOptions:
        return self.named.get(namespace_of(channel), self.default)

    def find(self, channel: str) -> ChannelOptions | None:
        """Options of the channel's namespace; None when that namespace isn't configured."""
        ns = namespace_of(channel)
        if not ns:
            return self.default
        return self.named.get(ns)


def _options(base: ChannelOptions, values: dict[str, Any]) -> ChannelOptions:
    # The history ranges are those of the tidings.config schema (a test holds them equal).
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key == "history_size":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**6:
                raise ConfigError("history_size must be an integer from 0 to 1,000,000")
        elif key in ("history_ttl", "history_meta_ttl"):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not 0 <= value <= 30 * 86400:
                raise ConfigError(f"{key} must be from 0 to 2,592,000 seconds (30 days)")
        elif key == "allowed_delta_types":
            if not isinstance(value, list | tuple) or not set(value) <= {"fossil"}:
                raise ConfigError('allowed_delta_types: a list holding at most "fossil"')
            value = tuple(value)
        elif key.startswith("proxy_"):
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a URL")
        elif not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false")
        checked[key] = value
    return replace(base, **checked)
