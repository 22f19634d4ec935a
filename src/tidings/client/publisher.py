"""Publishing from application code: Django views, Flask handlers, Celery tasks, scripts.

``publish`` is plain blocking code (no event loop needed); ``apublish`` is its asyncio
twin and works on any number of event loops, one after the other (``asyncio.run`` per
call, Django's ``async_to_sync``) or at once (one per thread). Keep one ``Publisher`` per
process.

Every publish goes one way: the data is encoded once into a ``Call`` with an idempotency
key (generated unless given), then the transport (``transport.py``) carries it. A
transient failure — the server unreachable or timing out, a 5xx, 408 or 429 — is retried
with exponential backoff, and only when the call has a key: the server publishes a key
once, so a retry after a publish that did land returns the first result (``duplicate``)
instead of publishing twice. Other failures raise ``PublishError`` at once.

Out-of-band messages go through the server API: ``send`` to one connection, ``broadcast``
to every one; ``broadcast_channel`` publishes skipping one connection (``exclude_client``).
Each has an ``a``-prefixed asyncio twin.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from tidings.exceptions import PublishError
from tidings.protocol.envelope import is_json_text

from .transport import Call, Transport

if TYPE_CHECKING:
    from tidings.config import Config

__all__ = ["JsonEncoder", "PublishResult", "Publisher", "encode_json", "json_default"]

JsonEncoder = Callable[[Any], bytes | str]


@dataclass(slots=True, frozen=True)
class PublishResult:
    """Where the publication landed and how many of the server's subscribers it reached;
    ``duplicate``: the idempotency key had been published before (by an attempt whose
    answer was lost), and this is that publication's position."""

    channel: str
    offset: int
    epoch: str
    id: str
    subscribers: int
    duplicate: bool = False


def json_default(value: Any) -> Any:
    """What ``encode_json`` does with types orjson doesn't know: ``Decimal`` as its exact
    text (as Django's encoder writes it). Extend it for your own types::

        def default(value):
            if isinstance(value, Money):
                return str(value)
            return json_default(value)
    """
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


def encode_json(data: Any) -> bytes:
    """The default encoder: orjson, with ``datetime``/``date``/``time`` as ISO 8601 (UTC as
    ``Z``), ``UUID`` as its text, dataclasses and enums by value, ``Decimal`` as a string,
    and non-string dict keys as strings (as ``json.dumps`` does)."""
    return orjson.dumps(data, default=json_default, option=_OPTIONS)


def _transport_for(
    url: str,
    api_key: str,
    timeout: float,
    verify: ssl.SSLContext | str | bool,
    config: Config | None,
) -> Transport:
    scheme = url.partition("://")[0].lower()
    if scheme in ("http", "https"):
        from .http import HttpTransport

        return HttpTransport(url, api_key, timeout=timeout, verify=verify)
    if scheme in ("redis", "rediss"):
        from .redis import RedisTransport

        return RedisTransport(url, config=config, timeout=timeout)
    raise ValueError(
        f"Publisher: {url!r}: the URL must start with http://, https://, redis:// or rediss://"
    )


class Publisher:
    """``Publisher("http://127.0.0.1:8000", api_key)``; thread-safe.

    ``data`` that is not ``str``/``bytes`` is encoded with ``json_encoder`` (default
    ``encode_json``); ``str`` is sent as text, or as JSON with ``raw=True`` when it already
    is JSON text. ``timeout`` bounds each attempt (connecting, sending, each read);
    ``retries`` transient failures are retried, waiting ``backoff`` seconds and doubling
    (with jitter) up to ``max_backoff``. ``verify``: an ``ssl.SSLContext`` or CA file to
    trust an ``https://`` server by, or ``False``.

    ``Publisher("redis://127.0.0.1:6379")`` publishes straight into the hub's Redis, with
    no node in the path (``client/redis.py``; the ``redis`` extra); ``config``: the hub's
    configuration (its namespaces' history options, its Redis topology).
    """

    def __init__(
        self,
        url: str,
        api_key: str = "",
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        json_encoder: JsonEncoder = encode_json,
        verify: ssl.SSLContext | str | bool = True,
        transport: Transport | None = None,
        config: Config | None = None,
    ) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0 or max_backoff < backoff:
            raise ValueError("Publisher: timeout > 0, retries >= 0, 0 <= backoff <= max_backoff")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.json_encoder = json_encoder
        self.transport = transport or _transport_for(url, api_key, timeout, verify, config)

    # Publishing: encode once, then attempts.
    def publish(
        self,
        channel: str,
        data: Any,
        *,
        event: str | None = None,
        raw: bool = False,
        idempotency_key: str | None = None,
        exclude_client: str | None = None,
    ) -> PublishResult:
        """Publish and wait for the server's answer. ``idempotency_key``: None draws a new
        one; "" sends none (and so never retries). ``exclude_client``: every subscriber but
        that connection gets it."""
        call = self._publish_call(channel, data, event, raw, idempotency_key, exclude_client)
        return _result(channel, self._run(call))

    async def apublish(
        self,
        channel: str,
        data: Any,
        *,
        event: str | None = None,
        raw: bool = False,
        idempotency_key: str | None = None,
        exclude_client: str | None = None,
    ) -> PublishResult:
        """``publish`` from asyncio code."""
        call = self._publish_call(channel, data, event, raw, idempotency_key, exclude_client)
        return _result(channel, await self._arun(call))

    def _publish_call(
        self,
        channel: str,
        data: Any,
        event: str | None,
        raw: bool,
        key: str | None,
        exclude_client: str | None = None,
    ) -> Call:
        body, is_json = self._encode(data, raw)
        params = {"exclude_client": exclude_client} if exclude_client else {}
        return Call("publish", channel, body, is_json, event, _key(key), params)

    def _encode(self, data: Any, raw: bool) -> tuple[bytes, bool]:
        """The payload's bytes and whether they are JSON."""
        if isinstance(data, bytes | str):
            body = data.encode() if isinstance(data, str) else data
            return body, raw and is_json_text(body)
        encoded = self.json_encoder(data)
        return (encoded.encode() if isinstance(encoded, str) else encoded), True

    def _retry_delay(self, call: Call, attempt: int, error: PublishError) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up — the one
        place that decides, for blocking and asyncio calls alike."""
        if not (error.retryable and call.idempotency_key and attempt < self.retries):
            return None
        # Exponential with "equal jitter": publishers failing together don't come back
        # together.
        delay: float = min(self.max_backoff, self.backoff * 2.0**attempt)
        return delay / 2 + random.uniform(0, delay / 2)

    def _run(self, call: Call) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return self.transport.call(call)
            except PublishError as exc:
                delay = self._retry_delay(call, attempt, exc)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    async def _arun(self, call: Call) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await self.transport.acall(call)
            except PublishError as exc:
                delay = self._retry_delay(call, attempt, exc)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    # Out of band, through the server API (``POST /api/<method>``; HTTP only)
    def _api_call(self, method: str, params: dict[str, Any]) -> Call:
        body = self.json_encoder(params)
        raw = body.encode() if isinstance(body, str) else body
        return Call("api", "", raw, True, params={"method": method})

    def send(self, client_id: str, data: Any) -> None:
        """Send ``data`` (JSON) to the connection ``client_id``, on whichever node holds it;
        ``NoSuchConnection`` when none does."""
        self._run(self._api_call("send", {"client": client_id, "data": data}))

    async def asend(self, client_id: str, data: Any) -> None:
        await self._arun(self._api_call("send", {"client": client_id, "data": data}))

    def broadcast(self, data: Any) -> int:
        """Send ``data`` (JSON) to every connection on every node; how many got it."""
        return int(self._run(self._api_call("send_all", {"data": data})).get("delivered", 0))

    async def abroadcast(self, data: Any) -> int:
        answer = await self._arun(self._api_call("send_all", {"data": data}))
        return int(answer.get("delivered", 0))

    def broadcast_channel(
        self, data: Any, channel: str, *, exclude_client: str | None = None
    ) -> PublishResult:
        """Publish ``data`` to ``channel``'s subscribers but the connection
        ``exclude_client`` (``publish`` with ``exclude_client``)."""
        return self.publish(channel, data, exclude_client=exclude_client)

    async def abroadcast_channel(
        self, data: Any, channel: str, *, exclude_client: str | None = None
    ) -> PublishResult:
        return await self.apublish(channel, data, exclude_client=exclude_client)

    # Closing
    def close(self) -> None:
        """Close the blocking connections (each event loop's close when it shuts down)."""
        self.transport.close()

    async def aclose(self) -> None:
        """Close the blocking connections and the running loop's."""
        await self.transport.aclose()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _key(given: str | None) -> str:
    if given is None:
        return uuid.uuid4().hex
    if len(given) > 128 or not all("\x21" <= c <= "\x7e" and c != '"' for c in given):
        raise ValueError("idempotency_key: at most 128 printable ASCII characters, no quote")
    return given


def _result(channel: str, body: dict[str, Any]) -> PublishResult:
    try:
        return PublishResult(
            str(body["channel"]),
            int(body["offset"]),
            str(body["epoch"]),
            str(body["id"]),
            int(body["subscribers"]),
            bool(body.get("duplicate", False)),
        )
    except (KeyError, TypeError, ValueError):
        reason = "the answer lacks the publication's position"
        raise PublishError(f"publish to {channel}: {reason}", 200, reason=reason) from None
