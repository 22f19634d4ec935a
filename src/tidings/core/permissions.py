"""Channel checks shared by the client protocol's commands (Centrifugo's rules).

Besides the namespace options, a connection may hold **capabilities** (Centrifugo's
``caps``, from the connect proxy's result, an ``on_connect`` hook or the connection
token's ``caps`` claim): a list of ``{"channels": [...], "match": "" | "wildcard" |
"regex", "allow": ["sub", "pub", "prs", "hst"]}``. For a channel the first object with a
matching name decides what the capabilities grant (later objects are not looked at, so a
channel never collects rights from several); what it grants adds to what the namespace
allows: subscribing without a token (``sub``), publishing (``pub``), presence
(``prs``), history and positioned or recoverable subscriptions (``hst``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tidings.exceptions import DisconnectError, InvalidChannel, ReplyError
from tidings.protocol.centrifuge import codes

from .channels import ChannelOptions, validate_channel

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "CAPABILITIES",
    "OVERRIDABLE",
    "Caps",
    "apply_override",
    "cap_allows",
    "channel_options",
    "has_history_access",
    "may_subscribe_without_token",
    "user_allowed",
]


def channel_options(client: Client, channel: Any) -> ChannelOptions:
    """The namespace options of a valid channel name, or the protocol's error."""
    if not isinstance(channel, str) or not channel:
        raise DisconnectError(codes.BAD_REQUEST_DISCONNECT)
    try:
        validate_channel(channel)
    except InvalidChannel:
        raise ReplyError(codes.BAD_REQUEST) from None
    opts = client.node.namespaces.find(channel)
    if opts is None:
        raise ReplyError(codes.UNKNOWN_CHANNEL)
    return opts


CAPABILITIES = ("sub", "pub", "prs", "hst")


@dataclass(frozen=True, slots=True)
class _Cap:
    allow: frozenset[str]
    names: frozenset[str]  # exact names
    patterns: tuple[re.Pattern[str], ...]  # wildcard and regex matches, used with search()


def _wildcard(text: str) -> re.Pattern[str]:
    """``*`` stands for any run of characters (none too); nothing else is special. The
    whole name must match."""
    body = ".*".join(re.escape(part) for part in text.split("*"))
    return re.compile(rf"\A{body}\Z", re.DOTALL)


class Caps:
    """A connection's capabilities, parsed once (``Caps.parse``) and asked per channel."""

    __slots__ = ("_caps",)

    def __init__(self, caps: tuple[_Cap, ...]) -> None:
        self._caps = caps

    def __repr__(self) -> str:
        return f"<Caps of {len(self._caps)} objects>"

    @classmethod
    def parse(cls, value: Any) -> Caps:
        """``caps`` as JSON gives them. ``TypeError``/``ValueError`` for a shape that is
        not Centrifugo's (a list of objects with ``channels``, ``allow`` and ``match``),
        an unknown match type or a regular expression that doesn't compile. Unknown
        capability names grant nothing."""
        if not isinstance(value, list):
            raise TypeError("caps must be a list of objects")
        parsed = []
        for item in value:
            if not isinstance(item, dict):
                raise TypeError("caps must be a list of objects")
            channels, allow = item.get("channels") or [], item.get("allow") or []
            match = item.get("match") or ""
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise TypeError("caps channels must be a list of strings")
            if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
                raise TypeError("caps allow must be a list of strings")
            granted = frozenset(a for a in allow if a in CAPABILITIES)
            if match == "":
                parsed.append(_Cap(granted, frozenset(channels), ()))
            elif match == "wildcard":
                parsed.append(_Cap(granted, frozenset(), tuple(_wildcard(c) for c in channels)))
            elif match == "regex":
                # Unanchored unless the expression anchors itself, as Go's MatchString is.
                try:
                    patterns = tuple(re.compile(c) for c in channels)
                except re.error as exc:
                    raise ValueError(f"caps regex: {exc}") from None
                parsed.append(_Cap(granted, frozenset(), patterns))
            else:
                raise ValueError(f"caps match {match!r}: use wildcard or regex")
        return cls(tuple(parsed))

    def granted(self, channel: str) -> frozenset[str]:
        """What the first object naming ``channel`` allows; nothing when none does."""
        for cap in self._caps:
            if channel in cap.names or any(p.search(channel) for p in cap.patterns):
                return cap.allow
        return frozenset()


def cap_allows(client: Client, channel: str, capability: str) -> bool:
    """Whether the connection's capabilities grant ``capability`` on ``channel``."""
    caps = client.caps
    return caps is not None and capability in caps.granted(channel)


def user_allowed(client: Client, channel: str) -> bool:
    """``#`` channels: the users after the boundary, separated by commas."""
    options = client.options
    _, sep, users = channel.rpartition(options.user_boundary)
    return bool(sep) and client.user in users.split(options.user_separator)


def has_history_access(client: Client, channel: str, opts: ChannelOptions) -> bool:
    """Whether a subscriber of ``channel`` may read its history (and so ask for a
    positioned or recoverable subscription)."""
    return (
        cap_allows(client, channel, "hst")
        or opts.allow_history_for_subscriber
        or (opts.allow_history_for_client and client.user != "")
        or opts.allow_history_for_anonymous
    )


def may_subscribe_without_token(client: Client, channel: str) -> bool:
    """Whether ``client`` could subscribe to ``channel`` by itself, without a token."""
    options = client.options
    opts = client.node.namespaces.find(channel)
    if opts is None:
        return False
    if cap_allows(client, channel, "sub"):
        return True
    if channel.startswith(options.private_prefix):
        return False
    if options.insecure:
        return True
    if opts.allow_user_limited_channels and options.user_boundary in channel:
        return user_allowed(client, channel)
    return opts.allow_subscribe_for_client and (
        client.user != "" or opts.allow_subscribe_for_anonymous
    )


OVERRIDABLE = (
    "presence",
    "join_leave",
    "force_push_join_leave",
    "force_recovery",
    "force_positioning",
)


def apply_override(opts: ChannelOptions, override: Any) -> ChannelOptions:
    """Channel options changed for one subscription by a subscription token's (or the
    server API's) ``override``: ``{"presence": {"value": true}, ...}``."""
    if not isinstance(override, dict):
        return opts
    changes = {}
    for name in OVERRIDABLE:
        item = override.get(name)
        if isinstance(item, dict) and isinstance(item.get("value"), bool):
            changes[name] = item["value"]
    return replace(opts, **changes) if changes else opts
