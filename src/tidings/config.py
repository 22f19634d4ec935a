"""Configuration: defaults, then ``tidings.toml``, then ``TIDINGS_*`` environment variables,
then command-line flags; each later source wins.

Every key of ``Config`` can be set in the TOML file (top level) or as ``TIDINGS_<KEY>``
(upper case). Namespaces live in ``[namespaces.<name>]`` tables; stream templates in
``[templates.<name>]`` tables with ``template``, ``content_type``, ``header``, ``footer``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tidings.brokers.redis_settings import RedisSettings, check_url
from tidings.brokers.sqlite_file import store_path
from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.client_types import ClientOptions
from tidings.core.message_log import MessageLog
from tidings.core.tokens import TokenVerifier
from tidings.exceptions import ConfigError
from tidings.protocol.template import MessageTemplate

__all__ = ["BOUNDS", "Bound", "Config", "is_loopback_host", "load_config"]


@dataclass
class Config:
    """Everything a server needs to know. Sizes are bytes, times seconds."""

    host: str = "127.0.0.1"
    port: int = 8000
    # TLS on the native server: a PEM certificate chain and its private key.
    certfile: str = ""
    keyfile: str = ""
    api_key: str = ""
    stats_open: bool = False
    allowed_origins: list[str] = field(default_factory=list)
    demo: bool = False
    demo_public: bool = False
    log_level: str = "info"
    # Observability (issue 11 item 5): /metrics and the log format.
    metrics_open: bool = False
    log_format: str = "text"
    log_publications: bool = False
    # Admin dashboard (issue 11 item 4): /admin is off unless one of these is set.
    admin_password: str = ""
    admin_token: str = ""
    admin_session_ttl: float = 43200.0
    max_connections: int = 10000
    max_connections_per_ip: int = 1000
    connection_rate_per_ip: float = 100.0
    connection_burst_per_ip: int = 200
    limit_loopback: bool = False
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
    workers: int = 1
    broker: str = "memory"
    # Redis (broker = "redis://…" or "redis" with redis_urls): docs/scaling.md
    redis_urls: list[str] = field(default_factory=list)
    redis_cluster: bool = False
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = ""
    redis_prefix: str = "tidings"
    redis_timeout: float = 5.0
    redis_connect_timeout: float = 5.0
    redis_pool_size: int = 64
    redis_health_interval: float = 1.0
    inbound_prefix: str = "tidings:publish"
    inbound_stream: str = ""
    history_size: int = 100
    history_ttl: float = 600.0
    history_meta_ttl: float = 86400.0
    # Durable history (single node): a SQLite file, also spelt broker = "sqlite:///file.db";
    # history_sync is SQLite's synchronous mode, "normal" or "full" (docs/persistence.md).
    history_path: str = ""
    history_sync: str = "normal"
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
    client_command_rate: float = 100.0
    client_command_burst: int = 500
    # hooks (docs/hooks.md)
    hooks: list[str] = field(default_factory=list)
    hook_timeout: float = 5.0
    hook_threads: int = 16
    message_log_format: str = ""
    # HTTP proxies (Centrifugo's; per-namespace ones are namespace options)
    proxy_connect_endpoint: str = ""
    proxy_refresh_endpoint: str = ""
    proxy_rpc_endpoint: str = ""
    proxy_disconnect_endpoint: str = ""
    proxy_timeout: float = 1.0
    proxy_http_headers: list[str] = field(default_factory=list)
    # personal channels (Centrifugo's client.subscribe_to_user_personal_channel)
    subscribe_to_user_personal_channel: bool = False
    personal_channel_namespace: str = ""
    personal_single_connection: bool = False
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
            command_rate=self.client_command_rate,
            command_burst=self.client_command_burst,
            personal_channels=self.subscribe_to_user_personal_channel,
            personal_namespace=self.personal_channel_namespace,
            personal_single_connection=self.personal_single_connection,
        )

    def hook_modules(self) -> list[str]:
        """The modules ``hooks`` names (a comma-separated string is allowed too)."""
        names = self.hooks.split(",") if isinstance(self.hooks, str) else list(self.hooks)
        return [name.strip() for name in names if name.strip()]

    def message_log(self) -> MessageLog | None:
        """The message log ``message_log_format`` asks for; None when it is unset."""
        return MessageLog(self.message_log_format) if self.message_log_format else None

    def message_templates(self) -> dict[str, MessageTemplate]:
        result = {}
        for name, spec in self.templates.items():
            if not isinstance(spec, dict) or "template" not in spec:
                raise ConfigError(f"template {name!r} needs a 'template' string")
            extra = {k: str(spec[k]) for k in ("content_type", "header", "footer") if k in spec}
            result[name] = MessageTemplate(name, str(spec["template"]), **extra)
        return result

    def validate(self) -> None:
        """Refuse, with a ``ConfigError`` naming the key, what a server can't run with: a
        number outside its ``BOUNDS``, the demo page on a public address unless
        ``demo_public``, bad namespaces or templates."""
        for name, bound in BOUNDS.items():
            bound.check(name, getattr(self, name))
        tables = [("default_namespace", self.default_namespace)]
        if isinstance(self.namespaces, dict):
            tables += [(f"namespaces.{ns}", opts) for ns, opts in self.namespaces.items()]
        for table, opts in tables:
            for key in ("history_size", "history_ttl", "history_meta_ttl"):
                if isinstance(opts, dict) and key in opts:
                    BOUNDS[key].check(f"{table}.{key}", opts[key])
        if self.demo and not self.demo_public and not is_loopback_host(self.host):
            raise ConfigError(
                f"demo = true on {self.host!r}, not a loopback address: the demo page hands "
                "the publish API key to anyone who can reach it. Bind 127.0.0.1, or force it "
                "with --demo-public (demo_public = true)"
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format {self.log_format!r}: text or json")
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("certfile and keyfile go together: set both for TLS, or neither")
        namespaces = self.channel_namespaces()
        self.message_templates()
        self.message_log()
        for name in self.hook_modules():
            if not all(part.isidentifier() for part in name.split(".")):
                raise ConfigError(f"hooks: {name!r} is not a module path (myproject.realtime)")
        from tidings.proxy import NAMESPACE_ENDPOINTS, check_endpoint

        for name in (
            "proxy_connect_endpoint",
            "proxy_refresh_endpoint",
            "proxy_rpc_endpoint",
            "proxy_disconnect_endpoint",
        ):
            check_endpoint(name, getattr(self, name))
        scopes = [("default_namespace", namespaces.default), *namespaces.named.items()]
        for scope, channel_opts in scopes:
            for name in NAMESPACE_ENDPOINTS:
                check_endpoint(f"{scope}.{name}", getattr(channel_opts, name))
        ns = self.personal_channel_namespace
        if ns and ns not in namespaces.named:
            raise ConfigError(
                f"personal_channel_namespace: no namespace {ns!r} ([namespaces.{ns}])"
            )
        ChannelOptions()
        self.redis_settings()
        store_path(self.broker, self.history_path, self.history_sync)
        if self.workers > 1 and self.redis_settings() is None:
            raise ConfigError(
                f"workers = {self.workers} needs a shared broker: with the memory broker (or "
                "the SQLite store, which one process holds) each "
                "worker would be a hub of its own, and a subscriber on one would miss what is "
                "published on another. Use --broker redis://host:port (broker = "
                '"redis://…"), or one worker'
            )

    def redis_settings(self, node_name: str = "tidings") -> RedisSettings | None:
        """The Redis deployment ``broker`` names; None for the memory broker."""
        broker = self.broker.strip()
        if broker == "memory" or broker.startswith("sqlite:"):
            if self.redis_urls:
                raise ConfigError('redis_urls is set but broker = "memory": set broker = "redis"')
            return None
        if broker == "redis":
            urls = list(self.redis_urls)
            if not urls:
                raise ConfigError('broker = "redis" needs redis_urls (or broker = "redis://…")')
        elif broker.startswith(("redis://", "rediss://")):
            urls = [broker, *self.redis_urls]
        else:
            raise ConfigError(
                f"broker: unknown broker {self.broker!r} (memory, sqlite:///file.db, "
                "redis://host:port, rediss://…, or redis with redis_urls)"
            )
        if self.redis_cluster and self.redis_sentinel_master:
            raise ConfigError("redis_cluster and redis_sentinel_master exclude each other")
        if not self.redis_prefix or any(c in self.redis_prefix for c in "{}*?[] "):
            raise ConfigError(f"redis_prefix {self.redis_prefix!r}: letters, digits, ':', '_', '-'")
        settings = RedisSettings(
            urls=tuple(urls),
            cluster=self.redis_cluster,
            sentinel_master=self.redis_sentinel_master,
            sentinel_password=self.redis_sentinel_password,
            prefix=self.redis_prefix,
            timeout=self.redis_timeout,
            connect_timeout=self.redis_connect_timeout,
            pool_size=self.redis_pool_size,
            health_interval=self.redis_health_interval,
            node_name=node_name,
        )
        for url in urls:
            check_url(url)
        return settings


@dataclass(frozen=True, slots=True)
class Bound:
    """The values a numeric setting may take: ``low`` to ``high``, both included, or with
    ``above`` anything more than ``low`` up to ``high``."""

    low: float
    high: float
    unit: str = ""
    above: bool = False

    def allows(self, value: float) -> bool:
        # Written so that NaN is refused: every comparison with it is false.
        return (value > self.low if self.above else value >= self.low) and value <= self.high

    def describe(self) -> str:
        """The range as docs/configuration.md shows it: ``1 to 3,600``."""
        low, high = _number(self.low, grouped=True), _number(self.high, grouped=True)
        return f"more than {low} up to {high}" if self.above else f"{low} to {high}"

    def check(self, name: str, value: Any) -> None:
        """Raise ``ConfigError`` naming ``name``, the value and the range unless allowed."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if not self.allows(value):
            unit = f" {self.unit}" if self.unit else ""
            raise ConfigError(
                f"{name} = {_number(value)} is out of range: allowed {self.describe()}{unit}"
            )


def _number(value: float, *, grouped: bool = False) -> str:
    """``25.0`` as ``25``; with ``grouped``, thousands separated by commas."""
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return f"{int(value):,}" if grouped else str(int(value))


_DAY = 86400.0
_MIB = 1 << 20

# What a sane deployment can need, and no more; docs/configuration.md shows each range.
BOUNDS: dict[str, Bound] = {
    "port": Bound(0, 65535),
    # Each connection is a file descriptor; by default Linux lets a process have at most
    # 1,048,576 (fs.nr_open).
    "max_connections": Bound(1, 1_000_000),
    "max_connections_per_ip": Bound(0, 1_000_000),
    "connection_rate_per_ip": Bound(0, 1_000_000, "per second"),
    "connection_burst_per_ip": Bound(1, 1_000_000),
    "max_channels_per_connection": Bound(1, 1024),
    "max_header_bytes": Bound(4096, _MIB, "bytes"),
    "max_body_bytes": Bound(1024, 64 * _MIB, "bytes"),
    "max_message_bytes": Bound(1024, 64 * _MIB, "bytes"),
    "max_outgoing_bytes": Bound(64 * 1024, 256 * _MIB, "bytes"),
    "keepalive_timeout": Bound(0, _DAY, "seconds", above=True),
    "request_timeout": Bound(0, _DAY, "seconds", above=True),
    "longpoll_timeout": Bound(0, _DAY, "seconds", above=True),
    # The client protocol announces its ping interval in whole seconds; 0 would be a
    # heartbeat loop that never sleeps.
    "ping_interval": Bound(1, 3600, "seconds"),
    # Below it, browsers would retry a failing stream in a tight loop.
    "sse_retry_ms": Bound(100, 3_600_000, "milliseconds"),
    "shutdown_timeout": Bound(0, _DAY, "seconds", above=True),
    # Admin dashboard (issue 11 item 4).
    "admin_session_ttl": Bound(60, 30 * _DAY, "seconds"),
    # Worker processes of one `tidings serve`: a few per core is already too many.
    "workers": Bound(1, 256),
    # The same ranges as a namespace's own (core/channels.py, _options).
    "history_size": Bound(0, 1_000_000),
    "history_ttl": Bound(0, 30 * _DAY, "seconds"),
    "history_meta_ttl": Bound(0, 30 * _DAY, "seconds"),
    "recovery_max_publications": Bound(1, 100_000),
    # Presence is refreshed every third of this: below a few seconds that is a busy store.
    "presence_ttl": Bound(3, _DAY, "seconds"),
    "client_max_channels": Bound(1, 65536),
    # Connections that don't say ``connect`` in time are closed (3502 stale).
    "client_connect_timeout": Bound(0, 3600, "seconds", above=True),
    "client_command_rate": Bound(0, 1_000_000, "per second"),
    "client_command_burst": Bound(1, 1_000_000),
    "redis_timeout": Bound(0, 600, "seconds", above=True),
    "redis_connect_timeout": Bound(0, 600, "seconds", above=True),
    "redis_pool_size": Bound(1, 10_000),
    # A lost PUB/SUB connection is noticed after three silent intervals.
    "redis_health_interval": Bound(0.1, 60, "seconds"),
    # A hook that takes longer is answered as an error (plain hooks' threads run on).
    "hook_timeout": Bound(0, 3600, "seconds", above=True),
    "hook_threads": Bound(1, 1024),
    # A proxy that takes longer is answered as a temporary error (100).
    "proxy_timeout": Bound(0, 60, "seconds", above=True),
}


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` binds loopback only: an address in 127.0.0.0/8 (also written
    ``::ffff:127.…``), ``::1``, or ``localhost``. A wildcard (``0.0.0.0``, ``::``, ``""``) or
    any other name is not: a name could resolve anywhere."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


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
