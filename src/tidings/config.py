"""Configuration: defaults, then ``tidings.toml``, then ``TIDINGS_*`` environment variables,
then command-line flags; each later source wins.

Every key of ``Config`` can be set in the TOML file (top level) or as ``TIDINGS_<KEY>``
(upper case; the text is parsed per the key's type: lists as JSON or comma-separated).
Namespaces live in ``[namespaces.<name>]`` tables, stream templates in
``[templates.<name>]`` tables with ``template``, ``content_type``, ``header``, ``footer``.

The schema is ``Config`` itself (tidings/config_schema.py says how it is read and checked,
with msgspec). To add a key, add one field in the style of the others: its type, its bounds
as ``Meta(ge=…, le=…)`` for a number (``gt`` to exclude the low end) or ``Literal[…]`` for an
enum, ``Help("one-line description", "unit")``, and its default; then its row in
docs/configuration.md (tests/unit/test_config.py says when the row is missing or differs).
``tidings genconfig``, the environment variable and the checks follow from the field.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import Meta

from tidings.brokers.redis_settings import RedisSettings, check_url
from tidings.brokers.sqlite_file import store_path
from tidings.config_schema import Help, Key, did_you_mean, keys_of, toml_value
from tidings.core.channels import ChannelOptions, Namespaces
from tidings.core.client_types import ClientOptions
from tidings.core.message_log import MessageLog
from tidings.core.tokens import TokenVerifier
from tidings.exceptions import ConfigError
from tidings.protocol.template import MessageTemplate

__all__ = [
    "ENVIRONMENT_NOT_KEYS",
    "KEYS",
    "NAMESPACE_OPTIONS",
    "Config",
    "check_tables",
    "genconfig",
    "is_loopback_host",
    "load_config",
]

_DAY = 86400.0
_MIB = 1 << 20


@dataclass
class Config:
    """Everything a server needs to know. Sizes are bytes, times seconds."""

    host: Annotated[str, Help("address to bind")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535), Help("port (0 = any free port)")] = 8000
    # TLS on the native server: a PEM certificate chain and its private key.
    certfile: Annotated[str, Help("TLS: PEM certificate chain (with keyfile)")] = ""
    keyfile: Annotated[str, Help("TLS: PEM private key of the certificate, unencrypted")] = ""
    api_key: Annotated[
        str,
        Help("key of /pub, /api and /stats (unset: generated per run)", shown_default="generated"),
    ] = ""
    stats_open: Annotated[bool, Help("serve /stats without the key")] = False
    allowed_origins: Annotated[
        list[str], Help('browser Origins allowed besides the server\'s own; ["*"] allows any')
    ] = field(default_factory=list)
    demo: Annotated[bool, Help("serve the demo page at / (loopback only unless demo_public)")] = (
        False
    )
    demo_public: Annotated[
        bool, Help("allow demo on a non-loopback address (the page carries the API key)")
    ] = False
    log_level: Annotated[Literal["debug", "info", "warning", "error"], Help("how much to log")] = (
        "info"
    )
    # Observability: /metrics and the logs (docs/operations.md).
    metrics_open: Annotated[bool, Help("serve /metrics without the key")] = False
    log_format: Annotated[
        Literal["text", "json"], Help("text lines, or one JSON object a line")
    ] = "text"
    log_publications: Annotated[bool, Help("log one info line per publication")] = False
    # The /admin dashboard is off unless one of these is set.
    admin_password: Annotated[str, Help("turns on /admin: the password of its login")] = ""
    admin_token: Annotated[
        str, Help("turns on /admin too: a secret for its login and for Bearer API calls")
    ] = ""
    admin_session_ttl: Annotated[
        float, Meta(ge=60, le=30 * _DAY), Help("seconds a dashboard login lasts", "seconds")
    ] = 43200.0
    # Ranges: what a sane deployment can need, and no more.
    # Each connection is a file descriptor; by default Linux lets a process have at most
    # 1,048,576 (fs.nr_open).
    max_connections: Annotated[
        int, Meta(ge=1, le=1_000_000), Help("beyond it new connections get 503")
    ] = 10000
    max_connections_per_ip: Annotated[
        int, Meta(ge=0, le=1_000_000), Help("connections at once from one address (0: no limit)")
    ] = 1000
    connection_rate_per_ip: Annotated[
        float,
        Meta(ge=0, le=1_000_000),
        Help("new connections a second from one address (0: no limit)", "per second"),
    ] = 100.0
    connection_burst_per_ip: Annotated[
        int, Meta(ge=1, le=1_000_000), Help("new connections one address may open at once")
    ] = 200
    limit_loopback: Annotated[
        bool, Help("apply the per-address limits to loopback addresses too")
    ] = False
    max_channels_per_connection: Annotated[
        int, Meta(ge=1, le=1024), Help("channels per simple-endpoint connection")
    ] = 16
    max_header_bytes: Annotated[
        int, Meta(ge=4096, le=_MIB), Help("request line and headers (431 beyond)", "bytes")
    ] = 16384
    max_body_bytes: Annotated[
        int, Meta(ge=1024, le=64 * _MIB), Help("request bodies (413 beyond)", "bytes")
    ] = 65536
    max_message_bytes: Annotated[
        int,
        Meta(ge=1024, le=64 * _MIB),
        Help("WebSocket messages from clients (close 1009 beyond)", "bytes"),
    ] = 65536
    max_outgoing_bytes: Annotated[
        int,
        Meta(ge=64 * 1024, le=256 * _MIB),
        Help("unsent bytes per connection before it is cut off", "bytes"),
    ] = 1 << 20
    write_delay: Annotated[
        float,
        Meta(ge=0, le=0.1),
        Help(
            "while busy, writes to connections wait up to the last write pass's length, at "
            "most this, so more messages share one write (0: never wait)",
            "seconds",
        ),
    ] = 0.005
    keepalive_timeout: Annotated[
        float,
        Meta(gt=0, le=_DAY),
        Help("idle keep-alive HTTP connections are closed after it", "seconds"),
    ] = 15.0
    request_timeout: Annotated[
        float, Meta(gt=0, le=_DAY), Help("a request not completed in time gets 408", "seconds")
    ] = 10.0
    longpoll_timeout: Annotated[
        float, Meta(gt=0, le=_DAY), Help("how long a long-poll waits", "seconds")
    ] = 30.0
    longpoll_session_ttl: Annotated[
        float,
        Meta(gt=0, le=_DAY),
        Help("a long-poll session ends when its client doesn't poll again within it", "seconds"),
    ] = 60.0
    longpoll_session_messages: Annotated[
        int,
        Meta(ge=1, le=1_000_000),
        Help("messages a long-poll session holds between polls (one more ends it)"),
    ] = 100
    longpoll_session_bytes: Annotated[
        int,
        Meta(ge=1024, le=256 * _MIB),
        Help("bytes of messages a long-poll session holds between polls", "bytes"),
    ] = 65536
    longpoll_max_sessions: Annotated[
        int,
        Meta(ge=1, le=100_000_000),
        Help("long-poll sessions kept (past it, the longest idle one ends)"),
    ] = 100_000
    # The client protocol announces its ping interval in whole seconds; 0 would be a
    # heartbeat loop that never sleeps.
    ping_interval: Annotated[
        float,
        Meta(ge=1, le=3600),
        Help("WebSocket pings, SSE heartbeats, client protocol pings", "seconds"),
    ] = 25.0
    # Below 100 ms, browsers would retry a failing stream in a tight loop.
    sse_retry_ms: Annotated[
        int, Meta(ge=100, le=3_600_000), Help("the SSE retry: field", "milliseconds")
    ] = 2000
    shutdown_timeout: Annotated[
        float, Meta(gt=0, le=_DAY), Help("how long shutdown may take", "seconds")
    ] = 5.0
    reuse_port: Annotated[bool, Help("SO_REUSEPORT, for several processes on one port")] = False
    # Worker processes of one `tidings serve`: a few per core is already too many.
    workers: Annotated[
        int,
        Meta(ge=1, le=256),
        Help("worker processes on one port (more than 1 needs a shared broker)"),
    ] = 1
    broker: Annotated[
        str, Help("memory, redis://host:port, rediss://..., or redis with redis_urls")
    ] = "memory"
    # Redis (broker = "redis://…" or "redis" with redis_urls): docs/scaling.md
    redis_urls: Annotated[
        list[str], Help("more Redis servers (or Cluster nodes, or Sentinels)")
    ] = field(default_factory=list)
    redis_cluster: Annotated[bool, Help("the URLs are nodes of one Redis Cluster")] = False
    redis_sentinel_master: Annotated[
        str, Help("the master name the Sentinels at the URLs watch")
    ] = ""
    redis_sentinel_password: Annotated[str, Help("the Sentinels' own password")] = ""
    redis_prefix: Annotated[str, Help("prefix of every Redis key and PUB/SUB channel")] = "tidings"
    redis_timeout: Annotated[
        float, Meta(gt=0, le=600), Help("seconds a Redis command may take", "seconds")
    ] = 5.0
    redis_connect_timeout: Annotated[
        float, Meta(gt=0, le=600), Help("seconds to connect to Redis", "seconds")
    ] = 5.0
    redis_pool_size: Annotated[
        int, Meta(ge=1, le=10_000), Help("command connections per Redis server")
    ] = 64
    # A lost PUB/SUB connection is noticed after three silent intervals.
    redis_health_interval: Annotated[
        float,
        Meta(ge=0.1, le=60),
        Help("seconds between PINGs on each PUB/SUB connection", "seconds"),
    ] = 1.0
    inbound_prefix: Annotated[
        str, Help('PUBLISH <prefix>:<channel> publishes to <channel> ("": off)')
    ] = "tidings:publish"
    inbound_stream: Annotated[
        str, Help('a Redis stream read by every node in one consumer group ("": off)')
    ] = ""
    # The same ranges as a namespace's own (core/channels.py, _options).
    history_size: Annotated[int, Meta(ge=0, le=1_000_000), Help("messages kept per channel")] = 100
    history_ttl: Annotated[
        float, Meta(ge=0, le=30 * _DAY), Help("seconds a message is kept", "seconds")
    ] = 600.0
    history_meta_ttl: Annotated[
        float,
        Meta(ge=0, le=30 * _DAY),
        Help("seconds a channel's offset and epoch outlive its last message", "seconds"),
    ] = 86400.0
    # Durable history on one node: a SQLite file (also spelt broker = "sqlite:///file.db").
    history_path: Annotated[
        str, Help('a SQLite file that keeps history across restarts ("": memory)')
    ] = ""
    history_sync: Annotated[
        Literal["normal", "full"],
        Help("SQLite's synchronous mode: full also survives power loss (docs/persistence.md)"),
    ] = "normal"
    recovery_max_publications: Annotated[
        int,
        Meta(ge=1, le=100_000),
        Help("at most this many missed messages are recovered on resume"),
    ] = 300
    # Presence is refreshed every third of this: below a few seconds that is a busy store.
    presence_ttl: Annotated[
        float,
        Meta(ge=3, le=_DAY),
        Help("seconds a presence entry lives unless refreshed", "seconds"),
    ] = 60.0
    # client protocol (Centrifugo-compatible)
    token_hmac_secret_key: Annotated[str, Help("HMAC secret: HS256/384/512 tokens")] = ""
    token_rsa_public_key: Annotated[str, Help("PEM public key: RS256/384/512 tokens")] = ""
    token_ecdsa_public_key: Annotated[str, Help("PEM public key: ES256/384/512 tokens")] = ""
    token_audience: Annotated[str, Help("required aud claim when set")] = ""
    token_issuer: Annotated[str, Help("required iss claim when set")] = ""
    client_insecure: Annotated[
        bool, Help("development only: no token and no permission checks")
    ] = False
    allow_anonymous_connect_without_token: Annotated[
        bool, Help('connections without a token, as user ""')
    ] = False
    client_max_channels: Annotated[
        int, Meta(ge=1, le=65536), Help("subscriptions per client-protocol connection")
    ] = 128
    # Connections that don't say ``connect`` in time are closed (3502 stale).
    client_connect_timeout: Annotated[
        float,
        Meta(gt=0, le=3600),
        Help("a connection that has not connected by then is closed", "seconds"),
    ] = 10.0
    client_command_rate: Annotated[
        float,
        Meta(ge=0, le=1_000_000),
        Help("commands a second per connection (0: no limit)", "per second"),
    ] = 100.0
    client_command_burst: Annotated[
        int, Meta(ge=1, le=1_000_000), Help("commands a connection may send at once")
    ] = 500
    # hooks (docs/hooks.md)
    hooks: Annotated[list[str] | str, Help("modules of hooks to load at start-up")] = field(
        default_factory=list
    )
    # A hook that takes longer is answered as an error (plain hooks' threads run on).
    hook_timeout: Annotated[
        float, Meta(gt=0, le=3600), Help("seconds a hook may take", "seconds")
    ] = 5.0
    hook_threads: Annotated[
        int, Meta(ge=1, le=1024), Help("threads running plain (def) hooks at once")
    ] = 16
    message_log_format: Annotated[
        str, Help("a log line per client message ({time} {type} {channel} ...); unset: none")
    ] = ""
    # HTTP proxies (Centrifugo's; per-namespace ones are namespace options)
    proxy_connect_endpoint: Annotated[str, Help("URL of the connect proxy")] = ""
    proxy_refresh_endpoint: Annotated[str, Help("URL of the refresh proxy")] = ""
    proxy_rpc_endpoint: Annotated[str, Help("URL of the RPC proxy")] = ""
    proxy_disconnect_endpoint: Annotated[str, Help("URL told of every connection that closes")] = ""
    # A proxy that takes longer is answered as a temporary error (100).
    proxy_timeout: Annotated[
        float, Meta(gt=0, le=60), Help("seconds a proxy may take", "seconds")
    ] = 1.0
    proxy_http_headers: Annotated[
        list[str], Help("request headers passed to proxies besides the standard ones")
    ] = field(default_factory=list)
    # personal channels (Centrifugo's client.subscribe_to_user_personal_channel)
    subscribe_to_user_personal_channel: Annotated[
        bool, Help("subscribe each connection with a user to #<user>")
    ] = False
    personal_channel_namespace: Annotated[
        str, Help("the (configured) namespace of personal channels")
    ] = ""
    personal_single_connection: Annotated[
        bool, Help("a user's new connection closes the user's others")
    ] = False
    default_namespace: Annotated[
        dict[str, Any], Help("options of channels without a namespace ([default_namespace])")
    ] = field(default_factory=dict)
    namespaces: Annotated[
        dict[str, dict[str, Any]], Help("options of channels <name>:... ([namespaces.<name>])")
    ] = field(default_factory=dict)
    templates: Annotated[
        dict[str, dict[str, str]],
        Help("stream templates ([templates.<name>]: template, content_type, header, footer)"),
    ] = field(default_factory=dict)

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
        value its type or bounds don't allow, the demo page on a public address unless
        ``demo_public``, bad namespaces or templates."""
        for name, key in KEYS.items():
            key.check(getattr(self, name), "")
        check_tables(self.default_namespace, self.namespaces, self.templates, "")
        if self.demo and not self.demo_public and not is_loopback_host(self.host):
            raise ConfigError(
                f"demo = true on {self.host!r}, not a loopback address: the demo page hands "
                "the publish API key to anyone who can reach it. Bind 127.0.0.1, or force it "
                "with --demo-public (demo_public = true)"
            )
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


KEYS: dict[str, Key] = keys_of(Config)

# TIDINGS_* variables read by other parts (the publish and subscribe commands, the tests),
# not configuration keys: everything else under that prefix must be a key.
ENVIRONMENT_NOT_KEYS = frozenset(
    {"TIDINGS_URL", "TIDINGS_FUZZ_EXAMPLES", "TIDINGS_REDIS_SERVER", "TIDINGS_TEST_TIMEOUT_SCALE"}
)

_TABLES = ("default_namespace", "namespaces", "templates")
_TEMPLATE_KEYS = ("template", "content_type", "header", "footer")


def _namespace_options() -> dict[str, Key]:
    """The options of a namespace table: ``ChannelOptions``' fields, the history ones with
    the bounds of the top-level keys of the same name."""
    import typing

    hints = typing.get_type_hints(ChannelOptions)
    options: dict[str, Key] = {}
    for name, kind in hints.items():
        if name in KEYS:
            options[name] = KEYS[name]
            continue
        if name == "allowed_delta_types":
            kind = list[Literal["fossil"]]
        default = getattr(ChannelOptions(), name)
        options[name] = Key(name, kind, default, Help(""))
    return options


NAMESPACE_OPTIONS: dict[str, Key] = _namespace_options()


def _table(value: Any, name: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        where = f" ({source})" if source else ""
        raise ConfigError(f"{name}{where}: expected a table, got {value!r}")
    return value


def _check_options(value: Any, table: str, source: str) -> None:
    for option, item in _table(value, table, source).items():
        key = NAMESPACE_OPTIONS.get(option)
        if key is None:
            hint = did_you_mean(option, NAMESPACE_OPTIONS)
            where = f"{source}: " if source else ""
            raise ConfigError(f"{where}unknown option {table}.{option}{hint}")
        key.check(item, source, f"{table}.{option}")


def check_tables(default_namespace: Any, namespaces: Any, templates: Any, source: str) -> None:
    """Refuse a table key whose options or template fields the schema doesn't allow."""
    _check_options(default_namespace, "default_namespace", source)
    for ns, opts in _table(namespaces, "namespaces", source).items():
        _check_options(opts, f"namespaces.{ns}", source)
    where = f"{source}: " if source else ""
    for name, spec in _table(templates, "templates", source).items():
        for part, text in _table(spec, f"templates.{name}", source).items():
            if part not in _TEMPLATE_KEYS:
                hint = did_you_mean(part, _TEMPLATE_KEYS)
                raise ConfigError(f"{where}unknown template field templates.{name}.{part}{hint}")
            if not isinstance(text, str):
                raise ConfigError(f"{where}templates.{name}.{part} = {text!r}: expected a string")
        if "template" not in spec:
            raise ConfigError(f"{where}template {name!r} needs a 'template' string")


def _read_file(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"can't read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = KEYS.get(name)
        if key is None:
            raise ConfigError(f"{path}: unknown key {name!r}{did_you_mean(name, KEYS)}")
        values[name] = value if name in _TABLES else key.check(value, str(path))
    check_tables(
        values.get("default_namespace", {}),
        values.get("namespaces", {}),
        values.get("templates", {}),
        str(path),
    )
    return values


def _read_environment(env: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    names = {"TIDINGS_" + name.upper(): name for name in KEYS}
    values: dict[str, Any] = {}
    for var, text in env.items():
        if not var.startswith("TIDINGS_") or var in ENVIRONMENT_NOT_KEYS:
            continue
        name = names.get(var)
        if name is None:
            hint = did_you_mean(var, [*names, *ENVIRONMENT_NOT_KEYS])
            raise ConfigError(f"unknown environment variable {var}{hint}")
        if name in _TABLES:
            raise ConfigError(f"{var}: [{name}] tables are set in the file only")
        values[name] = KEYS[name].parse(text, var)
    return values


def load_config(
    path: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Defaults ← TOML file ← ``TIDINGS_*`` environment ← ``overrides`` (command-line flags;
    None values skipped). Each value is checked against the schema where it comes from."""
    values = _read_file(path) if path is not None else {}
    values.update(_read_environment(os.environ if environ is None else environ))
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        key = KEYS.get(name)
        if key is None:
            raise ConfigError(f"unknown key {name!r}{did_you_mean(name, KEYS)}")
        values[name] = key.check(value, "--" + name.replace("_", "-"))
    config = Config(**values)
    config.validate()
    return config


def genconfig() -> str:
    """A commented ``tidings.toml`` with every key at its default."""
    lines = [
        "# tidings configuration: every key at its default (tidings genconfig).",
        "# docs/configuration.md explains each; TIDINGS_<KEY> variables and flags override.",
    ]
    for name, key in KEYS.items():
        if name in _TABLES:
            continue
        allowed = key.describe().replace("`", "")
        unit = f" {key.help.unit}" if key.help.unit and allowed else ""
        lines += ["", f"# {key.help.text}" + (f"; allowed {allowed}{unit}" if allowed else "")]
        lines.append(f"{name} = {toml_value(key.default)}")
    for name in _TABLES:
        lines += ["", f"# {KEYS[name].help.text}", f"[{name}]"]
    return "\n".join(lines) + "\n"
