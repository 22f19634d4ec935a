"""The hub's configuration from a Django project's ``TIDINGS`` setting."""

from __future__ import annotations

from typing import Any

from tidings.config import Config, load_config

from .conf import hub_address, tidings_settings

__all__ = ["SESSION_HOOKS", "hub_config"]

SESSION_HOOKS = "tidings.contrib.django.realtime"


def hub_config(**overrides: Any) -> Config:
    """``CONFIG_FILE`` ← the environment ← what ``TIDINGS`` says of the hub (its address
    from ``URL``, ``API_KEY``, ``BROKER``, the token keys) ← ``SERVER`` ← ``overrides``;
    the session hooks first, then the file's and ``HOOKS``."""
    conf = tidings_settings()
    derived: dict[str, Any] = {
        "api_key": conf["API_KEY"] or None,
        "broker": conf["BROKER"],
        "token_hmac_secret_key": conf["TOKEN_HMAC_SECRET_KEY"] or None,
        "token_audience": conf["TOKEN_AUDIENCE"] or None,
        "token_issuer": conf["TOKEN_ISSUER"] or None,
    }
    if str(conf["URL"]).startswith(("http://", "https://")):
        derived["host"], derived["port"] = hub_address(str(conf["URL"]))
    given = {key: value for key, value in overrides.items() if value is not None}
    config = load_config(
        conf["CONFIG_FILE"], overrides={**derived, **dict(conf["SERVER"]), **given}
    )
    first = [SESSION_HOOKS] if conf["SESSION_AUTH"] else []
    modules = [*first, *config.hook_modules(), *conf["HOOKS"]]
    config.hooks = list(dict.fromkeys(modules))
    return config
