"""Channel checks shared by the client protocol's commands (Centrifugo's rules)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tidings.exceptions import DisconnectError, InvalidChannel, ReplyError
from tidings.protocol.centrifuge import codes

from .channels import ChannelOptions, validate_channel

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "OVERRIDABLE",
    "apply_override",
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


def user_allowed(client: Client, channel: str) -> bool:
    """``#`` channels: the users after the boundary, separated by commas."""
    options = client.options
    _, sep, users = channel.rpartition(options.user_boundary)
    return bool(sep) and client.user in users.split(options.user_separator)


def has_history_access(client: Client, opts: ChannelOptions) -> bool:
    return (
        opts.allow_history_for_subscriber
        or (opts.allow_history_for_client and client.user != "")
        or opts.allow_history_for_anonymous
    )


def may_subscribe_without_token(client: Client, channel: str) -> bool:
    """Whether ``client`` could subscribe to ``channel`` by itself, without a token."""
    options = client.options
    opts = client.node.namespaces.find(channel)
    if opts is None or channel.startswith(options.private_prefix):
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
