"""Django session authentication for every transport: the hooks ``manage.py tidings`` loads.

A connection that brought no token (a plain ``EventSource``, ``curl``, an SDK without a
token) is authenticated by its Django session cookie, checked against the project's session
store and user model as a Django view would (``django.contrib.auth.get_user``: the session's
user, its auth hash, an active account). ``conn.user`` becomes the user's primary key. A
missing, expired or forged session is refused as a bad token is (3500 "invalid token"),
unless ``TIDINGS["ALLOW_ANONYMOUS"]``. Channels starting with ``USER_CHANNEL_PREFIX``
(``user-``) are for their user alone: ``user-42`` only for user 42.

The hooks are plain functions: they run in the hook thread pool, where the ORM may block.
"""

from __future__ import annotations

import logging
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from tidings.core.conn import Conn
from tidings.core.hooks import Hooks
from tidings.exceptions import Reject

from .conf import tidings_settings

__all__ = ["authenticate", "hooks", "own_channel", "session_user"]

log = logging.getLogger("tidings.django")

hooks = Hooks()


def session_user(session_key: str) -> str | None:
    """The primary key (as text) of the user logged in with ``session_key``, or None."""
    from django.contrib.auth import get_user

    if not session_key or len(session_key) > 256:
        return None
    engine = import_module(settings.SESSION_ENGINE)
    # Stale connections of this pool thread are closed first, as Django does per request.
    close_old_connections()
    try:
        user = get_user(SimpleNamespace(session=engine.SessionStore(session_key)))  # type: ignore[arg-type]
    finally:
        close_old_connections()
    if not user.is_authenticated:
        return None
    return str(user.pk)


@hooks.on_connect
def authenticate(conn: Conn, context: dict[str, Any]) -> None:
    """A connection without a token's user gets its session's user, or is refused."""
    conf = tidings_settings()
    if conn.user or not conf["SESSION_AUTH"]:
        return
    user = session_user(conn.cookies.get(settings.SESSION_COOKIE_NAME, ""))
    if user is not None:
        conn.user = user
    elif not conf["ALLOW_ANONYMOUS"]:
        log.info("%s connection from %s refused: no valid session", conn.kind, conn.remote_addr)
        raise Reject(3500, "invalid token")


@hooks.on_subscribe
def own_channel(conn: Conn, context: dict[str, Any], channel: str) -> None:
    """``user-<id>`` channels for user ``<id>`` alone."""
    prefix = tidings_settings()["USER_CHANNEL_PREFIX"]
    if prefix and channel.startswith(prefix) and (not conn.user or channel != prefix + conn.user):
        log.info("user %r refused channel %s", conn.user, channel)
        raise Reject(103, "permission denied")
