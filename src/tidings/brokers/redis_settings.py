"""Redis settings, read without importing redis-py (the ``redis`` extra is optional)."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from tidings.exceptions import ConfigError

__all__ = ["RedisSettings", "check_url", "jump_hash", "tls_context", "url_options"]


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where the Redis deployment is and how to use it (see docs/scaling.md)."""

    urls: Sequence[str] = ("redis://127.0.0.1:6379",)
    cluster: bool = False  # ``urls`` are startup nodes of one Redis Cluster
    sentinel_master: str = ""  # a master name: ``urls`` are Sentinel addresses
    sentinel_password: str = ""
    prefix: str = "tidings"
    timeout: float = 5.0  # per command
    connect_timeout: float = 5.0
    pool_size: int = 64
    health_interval: float = 1.0  # PUB/SUB liveness PINGs
    node_name: str = field(default="tidings")


def jump_hash(key: bytes, buckets: int) -> int:
    """The bucket of ``key`` among ``buckets`` (jump consistent hash over a 64-bit hash)."""
    k = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    b, j = -1, 0
    while j < buckets:
        b = j
        k = (k * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((k >> 33) + 1)))
    return b


def tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        ctx.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def url_options(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"redis URL {url!r}: scheme must be redis:// or rediss://")
    options: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }
    for item in parts.query.split("&") if parts.query else []:
        key, _, value = item.partition("=")
        if key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            options[key] = unquote(value)
        else:
            raise ConfigError(f"redis URL {url!r}: unknown option {key!r}")
    if parts.scheme == "rediss":
        options["ssl"] = True
    return options


def check_url(url: str) -> None:
    """Raise ``ConfigError`` unless ``url`` is a Redis URL tidings can use."""
    url_options(url)
