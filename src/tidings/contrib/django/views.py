"""Token views for the browser: a connection token for the logged-in user, and subscription
tokens behind the ``SUBSCRIBE_PERMISSION`` callback.

Both answer JSON: ``{"token": …}``; 401 without a logged-in user, 403 for a channel the
callback refuses, 400 for a bad channel name, 503 when no ``TOKEN_HMAC_SECRET_KEY`` is set.
Tokens are HS256 with the hub's ``token_hmac_secret_key`` and checked by the hub's
pinned-algorithm verifier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from tidings.core.channels import validate_channel
from tidings.core.tokens import mint_token
from tidings.exceptions import InvalidChannel

from .conf import tidings_settings

__all__ = ["connection_token", "default_permission", "subscription_token"]

log = logging.getLogger("tidings.django")

# RFC 7518 §3.2: an HS256 key is at least as long as the hash.
_MIN_KEY_BYTES = 32


def default_permission(user: Any, channel: str) -> bool:
    """Without a ``SUBSCRIBE_PERMISSION``: the user's own ``user-<id>`` channel only."""
    prefix = tidings_settings()["USER_CHANNEL_PREFIX"]
    return bool(prefix) and channel == f"{prefix}{user.pk}"


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _mint(request: HttpRequest, channel: str | None) -> JsonResponse:
    conf = tidings_settings()
    secret = str(conf["TOKEN_HMAC_SECRET_KEY"])
    if len(secret.encode()) < _MIN_KEY_BYTES:
        log.error("TIDINGS['TOKEN_HMAC_SECRET_KEY'] is unset or shorter than 32 bytes")
        return _error(503, "tokens are not configured")
    if not request.user.is_authenticated:
        return _error(401, "log in first")
    claims: dict[str, Any] = {}
    if conf["TOKEN_AUDIENCE"]:
        claims["aud"] = conf["TOKEN_AUDIENCE"]
    if conf["TOKEN_ISSUER"]:
        claims["iss"] = conf["TOKEN_ISSUER"]
    ttl = float(conf["TOKEN_TTL"]) or None
    token = mint_token(secret, str(request.user.pk), ttl=ttl, channel=channel, **claims)
    return JsonResponse({"token": token})


@never_cache
@require_GET
def connection_token(request: HttpRequest) -> JsonResponse:
    """``GET``: a connection token whose user is the logged-in user's primary key."""
    return _mint(request, None)


@never_cache
@require_GET
def subscription_token(request: HttpRequest) -> JsonResponse:
    """``GET ?channel=…``: a subscription token, if ``SUBSCRIBE_PERMISSION`` allows it."""
    channel = request.GET.get("channel", "")
    try:
        validate_channel(channel)
    except InvalidChannel:
        return _error(400, "bad channel name")
    if not request.user.is_authenticated:
        return _error(401, "log in first")
    path = tidings_settings()["SUBSCRIBE_PERMISSION"]
    allowed: Callable[[Any, str], bool] = import_string(path) if path else default_permission
    if not allowed(request.user, channel):
        log.info("user %s refused a token for %s", request.user.pk, channel)
        return _error(403, "permission denied")
    return _mint(request, channel)
