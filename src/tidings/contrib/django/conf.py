"""The ``TIDINGS`` setting of a Django project, with its defaults.

Read on each use (not cached), so ``override_settings`` in a project's tests takes effect.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = ["DEFAULTS", "hub_address", "tidings_settings"]

DEFAULTS: dict[str, Any] = {
    # Where Publisher calls go: the hub's URL (http://, https://, redis://).
    "URL": "http://127.0.0.1:8001",
    # The hub's publish API key.
    "API_KEY": "",
    # The hub's broker (`manage.py tidings`): "memory", "redis://…".
    "BROKER": None,
    # The URL browsers reach the hub at ({% tidings_client %}); default: URL.
    "PUBLIC_URL": None,
    # A tidings.toml for `manage.py tidings`, and settings over it (Config field names).
    "CONFIG_FILE": None,
    "SERVER": {},
    # More hook modules for `manage.py tidings`, after the session hook.
    "HOOKS": [],
    # send_event/publish inside transaction.atomic(): after the commit (True) or at once.
    "ON_COMMIT": True,
    # Connections are authenticated by the Django session cookie (`manage.py tidings`).
    "SESSION_AUTH": True,
    # Whether a connection without a session (and without a token user) is let in.
    "ALLOW_ANONYMOUS": False,
    # `user-<id>` channels only for that user; None turns the rule off.
    "USER_CHANNEL_PREFIX": "user-",
    # Tokens minted by the views (HS256 with the hub's token_hmac_secret_key).
    "TOKEN_HMAC_SECRET_KEY": "",
    "TOKEN_TTL": 3600,
    "TOKEN_AUDIENCE": "",
    "TOKEN_ISSUER": "",
    # Dotted path of `f(user, channel) -> bool` for subscription tokens; None: the user's
    # own `user-<id>` channel only.
    "SUBSCRIBE_PERMISSION": None,
    # The transactional outbox's deliverer: seconds between polls, rows per batch.
    "OUTBOX_POLL_INTERVAL": 1.0,
    "OUTBOX_BATCH": 100,
}


def tidings_settings() -> dict[str, Any]:
    """``settings.TIDINGS`` over ``DEFAULTS``; unknown keys are refused (a typo would
    otherwise be ignored)."""
    given = getattr(settings, "TIDINGS", {}) or {}
    if not isinstance(given, dict):
        raise ImproperlyConfigured("TIDINGS must be a dict")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(f"TIDINGS: unknown keys {unknown} (known: {sorted(DEFAULTS)})")
    return {**DEFAULTS, **given}


def hub_address(url: str) -> tuple[str, int]:
    """The host and port an ``http(s)://`` hub URL names."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(f"TIDINGS['URL']: {url!r} is not an http(s):// URL")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
