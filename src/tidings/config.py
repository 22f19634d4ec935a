"""Configuration: defaults, then ``tidings.toml``, then ``TIDINGS_*`` environment variables,
then command-line flags; each later source wins.

Every key of ``Config`` can be set in the TOML file (top level) or as ``TIDINGS_<KEY>``
(upper case). Namespaces live in ``[namespaces.<name>]`` tables; stream templates in
``[templates.<name>]`` tables with ``template``, ``content_type``, ``header``, ``footer``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.client_types import ClientOptions
from tidings.core.tokens import TokenVerifier
from tidings.exceptions import ConfigError
from tidings.protocol.template import MessageTemplate

__all__ = ["Config", "load_config"]


@dataclass
class Config:
    """Everything a server needs to know. Sizes are bytes, times seconds."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str = ""
    stats_open: bool = False
    allowed_origins: list[str] = field(default_factory=list)
    demo: bool = False
    log_level: str = "info"
    max_connections: int = 10000
    max_channels_per_connection: int = 16
    max_header_bytes: int = 16384
    max_body_bytes: int = 65536
    max_message_bytes: int = 65536
    max_outgoing_bytes: int = 1 << 20
    keepalive_timeout: float = 15.0
    request_timeout: float = 10.0
    longpoll_timeout: float = 30.0
    ping_interval: float = 25.0
    sse_retry_ms: int = 2000
    shutdown_timeout: float = 5.0
    reuse_port: bool = False
    broker: str = "memory"
    history_size: int = 100
    history_ttl: float = 600.0
    history_meta_ttl: float = 86400.0
    recovery_max_publications: int = 300
    presence_ttl: float = 60.0
    # client protocol (Centrifugo-compatible)
    token_hmac_secret_key: str = ""
    token_rsa_public_key: str = ""
    token_ecdsa_public_key: str = ""
    token_audience: str = ""
    token_issuer: str = ""
    client_insecure: bool = False
    allow_anonymous_connect_without_token: bool = False
    client_max_channels: int = 128
    client_connect_timeout: float = 10.0
    default_namespace: dict[str, Any] = field(default_factory=dict)
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    templates: dict[str, dict[str, str]] = field(default_factory=dict)

    def channel_namespaces(self) -> Namespaces:
        """Options of channels without a namespace (``history_*`` and the
        ``[default_namespace]`` table) and of each ``[namespaces.<name>]``."""
        if not isinstance(self.default_namespace, dict):
            raise ConfigError("default_namespace must be a table of channel options")
        if "namespaces" in self.default_namespace:
            raise ConfigError("default_namespace can't hold namespaces")
        history = {
            "history_size": self.history_size,
            "history_ttl": self.history_ttl,
            "history_meta_ttl": self.history_meta_ttl,
        }
        default = Namespaces.from_mapping({**history, **self.default_namespace}).default
        # A namespace has its own options only (as in Centrifugo, where the options of
        # channels without a namespace are not inherited): what [default_namespace]
        # allows must not open every namespace too.
        named = Namespaces.from_mapping({**history, "namespaces": self.namespaces}).named
        return Namespaces(default, named)

    def token_verifier(self) -> TokenVerifier:
        return TokenVerifier(
            hmac_secret=self.token_hmac_secret_key,
            rsa_public_key=self.token_rsa_public_key,
            ecdsa_public_key=self.token_ecdsa_public_key,
            audience=self.token_audience,
            issuer=self.token_issuer,
        )

    def client_options(self) -> ClientOptions:
        return ClientOptions(
            ping_interval=max(1, int(self.ping_interval)),
            insecure=self.client_insecure,
            allow_anonymous_connect_without_token=self.allow_anonymous_connect_without_token,
            max_channels=self.client_max_channels,
            connect_timeout=self.client_connect_timeout,
        )

    def message_templates(self) -> dict[str, MessageTemplate]:
        result = {}
        for name, spec in self.templates.items():
            if not isinstance(spec, dict) or "template" not in spec:
                raise ConfigError(f"template {name!r} needs a 'template' string")
            extra = {k: str(spec[k]) for k in ("content_type", "header", "footer") if k in spec}
            result[name] = MessageTemplate(name, str(spec["template"]), **extra)
        return result

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("port must be 0..65535")
        for name in ("max_connections", "max_channels_per_connection", "max_header_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in ("max_body_bytes", "max_message_bytes", "max_outgoing_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        self.channel_namespaces()
        self.message_templates()
        ChannelOptions()


_FIELDS = {f.name: f for f in fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML or environment value into the field's type."""
    kind = _FIELDS[name].type
    if isinstance(value, str) and kind not in ("str",):
        if kind == "bool":
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        if kind == "int":
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
        if kind == "float":
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if kind == "list[str]":
            return [v.strip() for v in value.split(",") if v.strip()]
        raise ConfigError(f"{name} can't be set from the environment")
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{name}: expected an integer")
    if kind == "float" and not isinstance(value, int | float):
        raise ConfigError(f"{name}: expected a number")
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false")
    if kind == "str" and not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string")
    if kind == "list[str]" and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(f"{name}: expected a list of strings")
    return float(value) if kind == "float" else value


def load_config(
    path: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Defaults ← TOML file ← ``TIDINGS_*`` environment ← ``overrides`` (None values skipped)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"can't read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for key, value in data.items():
            if key not in _FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            tables = ("namespaces", "templates", "default_namespace")
            values[key] = value if key in tables else _coerce(key, value)
    env = os.environ if environ is None else environ
    for key in _FIELDS:
        if key in ("namespaces", "templates", "default_namespace"):
            continue
        text = env.get("TIDINGS_" + key.upper())
        if text is not None:
            values[key] = _coerce(key, text)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    config = Config(**values)
    config.validate()
    return config
