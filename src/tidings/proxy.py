"""HTTP proxies: the hooks for applications that are not in Python.

Centrifugo-compatible: each event is a ``POST`` of a JSON object to a configured URL, with the
request and answer shapes of Centrifugo's HTTP proxy (the fields of its ``proxy.proto``), so
a backend written for Centrifugo works unchanged. Connect, refresh and RPC have one URL each
(``proxy_connect_endpoint``, ``proxy_refresh_endpoint``, ``proxy_rpc_endpoint``); subscribe,
publish and sub_refresh one per namespace (the namespace options ``proxy_subscribe_endpoint``,
``proxy_publish_endpoint``, ``proxy_sub_refresh_endpoint``). tidings adds notifications
Centrifugo doesn't have: ``proxy_disconnect_endpoint`` and, per namespace,
``proxy_unsubscribe_endpoint`` (their answers are not read).

Every request carries ``client``, ``transport``, ``protocol`` and ``encoding``, and the
client's ``Origin``, ``User-Agent``, ``Cookie``, ``Authorization``, ``X-Real-Ip``,
``X-Forwarded-For``, ``X-Request-Id`` headers plus those ``proxy_http_headers`` names. An
answer is ``{"result": {...}}``, ``{"error": {"code", "message"}}`` (the client gets that
error) or ``{"disconnect": {"code", "reason"}}`` (the connection is closed). A backend that
can't be reached, doesn't answer within ``proxy_timeout``, answers another status than 200 or
something else than such an object is logged and answered as a temporary internal error
(100); the server goes on serving.

They are registered as hooks (``tidings.core.hooks``), before the application's own: the
connect proxy runs for connections without a token, as in Centrifugo.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.conn import PUBLISH_OPTIONS, Conn, Publish
from tidings.core.hooks import Hooks
from tidings.exceptions import ConfigError, HookError, Reject

if TYPE_CHECKING:
    import httpx

    from tidings.config import Config
    from tidings.core.channels import Namespaces

__all__ = ["NAMESPACE_ENDPOINTS", "PASSED_HEADERS", "HttpProxies", "check_endpoint"]

log = logging.getLogger("tidings.proxy")

# Centrifugo's default list of the client's headers a proxy request carries.
PASSED_HEADERS = (
    "origin",
    "user-agent",
    "cookie",
    "authorization",
    "x-real-ip",
    "x-forwarded-for",
    "x-request-id",
)

NAMESPACE_ENDPOINTS = (
    "proxy_subscribe_endpoint",
    "proxy_publish_endpoint",
    "proxy_sub_refresh_endpoint",
    "proxy_unsubscribe_endpoint",
)


def check_endpoint(name: str, url: str) -> None:
    """``ConfigError`` unless ``url`` is empty or an http(s) URL."""
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: {url!r} is not an http:// or https:// URL")


def _raw(result: dict[str, Any], name: str) -> Any:
    """A ``bytes`` field of an answer: raw JSON (``name``) or base64 (``b64<name>``)."""
    b64 = result.get("b64" + name)
    if isinstance(b64, str) and b64:
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise HookError(f"proxy answer: bad b64{name}") from None
    value = result.get(name)
    return None if value is None else orjson.Fragment(orjson.dumps(value))


def _subscribe_options(options: Any) -> dict[str, Any]:
    """One entry of a connect result's ``subs`` (Centrifugo's ``SubscribeOptions``) as an
    ``on_connect`` hook gives a server-side subscription's options."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise HookError("proxy answer: an entry of subs is not an object")
    out = {k: options[k] for k in ("expire_at", "override") if options.get(k) is not None}
    for key in ("info", "data"):
        value = _raw(options, key)
        if value is not None:
            out[key] = value
    return out


def _put(body: dict[str, Any], name: str, value: Any) -> None:
    """A payload into a request: JSON as is, bytes that are not JSON as ``b64<name>``."""
    if value is None:
        return
    if isinstance(value, bytes):
        body["b64" + name] = base64.b64encode(value).decode("ascii")
    else:
        body[name] = value


class HttpProxies:
    """The configured proxies, and the hooks that call them."""

    def __init__(self, config: Config, namespaces: Namespaces) -> None:
        self.connect = config.proxy_connect_endpoint
        self.refresh = config.proxy_refresh_endpoint
        self.rpc = config.proxy_rpc_endpoint
        self.disconnect = config.proxy_disconnect_endpoint
        self.timeout = config.proxy_timeout
        self.headers = PASSED_HEADERS + tuple(h.lower() for h in config.proxy_http_headers)
        self.namespaces = namespaces
        self._client: httpx.AsyncClient | None = None

    def configured(self) -> bool:
        options = [self.namespaces.default, *self.namespaces.named.values()]
        per_namespace = any(getattr(o, name) for o in options for name in NAMESPACE_ENDPOINTS)
        return per_namespace or any((self.connect, self.refresh, self.rpc, self.disconnect))

    def _any(self, name: str) -> bool:
        options = [self.namespaces.default, *self.namespaces.named.values()]
        return any(getattr(o, name) for o in options)

    def register(self, hooks: Hooks) -> None:
        """Add a hook for each configured proxy."""
        if self.connect:
            hooks.add("connect", self.on_connect)
        if self.refresh:
            hooks.add("refresh", self.on_refresh)
        if self.rpc:
            hooks.add("rpc", self.on_rpc, method="*")
        if self.disconnect:
            hooks.add("disconnect", self.on_disconnect)
        if self._any("proxy_subscribe_endpoint"):
            hooks.add("subscribe", self.on_subscribe)
        if self._any("proxy_publish_endpoint"):
            hooks.add("publish", self.on_publish)
        if self._any("proxy_sub_refresh_endpoint"):
            hooks.add("sub_refresh", self.on_sub_refresh)
        if self._any("proxy_unsubscribe_endpoint"):
            hooks.add("unsubscribe", self.on_unsubscribe)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # the hooks
    async def on_connect(self, conn: Conn, context: dict[str, Any]) -> dict[str, Any] | None:
        if conn.user:
            return None  # authenticated by its token: the proxy is for the others
        body = self._base(conn)
        _put(body, "data", conn.data)
        if conn.client_name:
            body["name"] = conn.client_name
        if conn.client_version:
            body["version"] = conn.client_version
        result = await self._post(self.connect, conn, body)
        granted: dict[str, Any] = {}
        for key in ("user", "expire_at", "meta"):
            if key in result:
                granted[key] = result[key]
        for key in ("info", "data"):
            value = _raw(result, key)
            if value is not None:
                granted[key] = value
        if result.get("channels"):
            granted["channels"] = result["channels"]
        subs = result.get("subs")
        if subs is not None:
            if not isinstance(subs, dict):
                raise HookError("proxy answer: subs is not an object")
            granted["subs"] = {ch: _subscribe_options(o) for ch, o in subs.items()}
        if result.get("caps") is not None:
            granted["caps"] = result["caps"]  # checked where it is used (permissions.Caps)
        return granted

    async def on_refresh(self, conn: Conn, context: dict[str, Any]) -> dict[str, Any]:
        body = {**self._base(conn), "user": conn.user}
        return self._expiry(await self._post(self.refresh, conn, body))

    async def on_subscribe(
        self, conn: Conn, context: dict[str, Any], channel: str
    ) -> dict[str, Any] | None:
        url = self.namespaces.options(channel).proxy_subscribe_endpoint
        if not url:
            return None
        body = {**self._base(conn), "user": conn.user, "channel": channel}
        result = await self._post(url, conn, body)
        granted: dict[str, Any] = {}
        for key in ("expire_at", "override"):
            if key in result:
                granted[key] = result[key]
        for key in ("info", "data"):
            value = _raw(result, key)
            if value is not None:
                granted[key] = value
        return granted

    async def on_publish(self, conn: Conn, context: dict[str, Any], channel: str, data: Any) -> Any:
        url = self.namespaces.options(channel).proxy_publish_endpoint
        if not url:
            return None
        body = {**self._base(conn), "user": conn.user, "channel": channel}
        _put(body, "data", data)
        result = await self._post(url, conn, body)
        value = _raw(result, "data")
        # Publish's fields are named as Centrifugo's publish proxy result's.
        how = {k: result[k] for k in PUBLISH_OPTIONS if result.get(k)}
        if not how:
            return value
        try:
            return Publish(**how) if value is None else Publish(value, **how)
        except TypeError as exc:
            raise HookError(f"proxy {url}: {exc}") from None

    async def on_sub_refresh(
        self, conn: Conn, context: dict[str, Any], channel: str
    ) -> dict[str, Any] | None:
        url = self.namespaces.options(channel).proxy_sub_refresh_endpoint
        if not url:
            return None
        body = {**self._base(conn), "user": conn.user, "channel": channel}
        return self._expiry(await self._post(url, conn, body))

    async def on_rpc(self, conn: Conn, context: dict[str, Any], data: Any, method: str) -> Any:
        body = {**self._base(conn), "user": conn.user, "method": method}
        _put(body, "data", data)
        return _raw(await self._post(self.rpc, conn, body), "data")

    async def on_disconnect(self, conn: Conn, context: dict[str, Any]) -> None:
        body = {**self._base(conn), "user": conn.user, "channels": conn.channels}
        await self._post(self.disconnect, conn, body)

    async def on_unsubscribe(self, conn: Conn, context: dict[str, Any], channel: str) -> None:
        url = self.namespaces.options(channel).proxy_unsubscribe_endpoint
        if url:
            body = {**self._base(conn), "user": conn.user, "channel": channel}
            await self._post(url, conn, body)

    # HTTP
    def _base(self, conn: Conn) -> dict[str, Any]:
        base = {
            "client": conn.id,
            "transport": conn.transport,
            "protocol": conn.protocol,
            "encoding": "binary" if conn.protocol == "protobuf" else "json",
        }
        if conn.meta is not None:
            base["meta"] = conn.meta
        return base

    @staticmethod
    def _expiry(result: dict[str, Any]) -> dict[str, Any]:
        keys = ("expired", "expire_at", "caps")  # caps: the refresh result's only
        granted: dict[str, Any] = {k: result[k] for k in keys if k in result}
        info = _raw(result, "info")
        if info is not None:
            granted["info"] = info
        return granted

    async def _post(self, url: str, conn: Conn, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        headers = {name: conn.headers[name] for name in self.headers if name in conn.headers}
        headers["content-type"] = "application/json"
        try:
            response = await self._client.post(url, content=orjson.dumps(body), headers=headers)
        except httpx.HTTPError as exc:
            raise HookError(f"proxy {url}: {type(exc).__name__} {exc}") from None
        if response.status_code != 200:
            raise HookError(f"proxy {url} answered {response.status_code}")
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise HookError(f"proxy {url} answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise HookError(f"proxy {url} answered {type(answer).__name__}, not an object")
        for key, code_key, text_key in (
            ("disconnect", "code", "reason"),
            ("error", "code", "message"),
        ):
            refusal = answer.get(key)
            if isinstance(refusal, dict) and refusal.get(code_key):
                try:
                    raise Reject(int(refusal[code_key]), str(refusal.get(text_key, "")))
                except (ValueError, TypeError):
                    raise HookError(f"proxy {url}: {key} code {refusal[code_key]!r}") from None
        result = answer.get("result") or {}
        if not isinstance(result, dict):
            raise HookError(f"proxy {url}: result is not an object")
        return result
