"""Publishing from application code: Django views, Flask handlers, Celery tasks, scripts.

``Publisher`` talks to ``POST /pub/<channel>`` over keep-alive HTTP. ``publish`` is plain
blocking code (no event loop needed); ``apublish`` is its asyncio twin. Out-of-band
messages go through the server API (``POST /api/...``): ``send`` to one connection,
``broadcast`` to every one, ``broadcast_channel`` to a channel's subscribers (a publish,
optionally skipping one connection); each has an ``a``-prefixed asyncio twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from tidings.exceptions import NoSuchConnection, PublishError, Unauthorized

__all__ = ["PublishResult", "Publisher"]


@dataclass(slots=True, frozen=True)
class PublishResult:
    """Where the publication landed and how many local subscribers it reached."""

    channel: str
    offset: int
    epoch: str
    id: str
    subscribers: int


class Publisher:
    """``Publisher("http://127.0.0.1:8000", api_key)``; thread-safe for ``publish``.

    ``data`` that is not ``str``/``bytes`` is sent as JSON; ``str`` is sent as text, or as
    JSON with ``raw=True`` when it already is JSON text.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None

    def _request(
        self, channel: str, data: Any, event: str | None, raw: bool, exclude_client: str | None
    ) -> dict[str, Any]:
        headers = {"X-API-Key": self.api_key}
        if isinstance(data, bytes | str):
            body = data.encode() if isinstance(data, str) else data
            if raw and _is_json(body):
                headers["Content-Type"] = "application/json"
            else:
                headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            body = orjson.dumps(data)
            headers["Content-Type"] = "application/json"
        params = {"event": event} if event else {}
        if exclude_client:
            params["exclude_client"] = exclude_client
        return {
            "url": f"{self.url}/pub/{quote(channel, safe='')}",
            "content": body,
            "headers": headers,
            "params": params,
        }

    def publish(
        self,
        channel: str,
        data: Any,
        *,
        event: str | None = None,
        raw: bool = False,
        exclude_client: str | None = None,
    ) -> PublishResult:
        """Publish and wait for the server's answer; ``exclude_client``: every subscriber
        but that connection gets it."""
        if self._sync is None:
            self._sync = httpx.Client(timeout=self.timeout)
        try:
            response = self._sync.post(**self._request(channel, data, event, raw, exclude_client))
        except httpx.HTTPError as exc:
            raise PublishError(f"can't reach {self.url}: {exc}") from None
        return _result(response)

    async def apublish(
        self,
        channel: str,
        data: Any,
        *,
        event: str | None = None,
        raw: bool = False,
        exclude_client: str | None = None,
    ) -> PublishResult:
        """Publish from asyncio code."""
        if self._async is None:
            self._async = httpx.AsyncClient(timeout=self.timeout)
        request = self._request(channel, data, event, raw, exclude_client)
        try:
            response = await self._async.post(**request)
        except httpx.HTTPError as exc:
            raise PublishError(f"can't reach {self.url}: {exc}") from None
        return _result(response)

    # out of band, through the server API
    def _api_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"{self.url}/api/{method}",
            "content": orjson.dumps(params),
            "headers": {"X-API-Key": self.api_key, "Content-Type": "application/json"},
        }

    def _api(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._sync is None:
            self._sync = httpx.Client(timeout=self.timeout)
        try:
            response = self._sync.post(**self._api_request(method, params))
        except httpx.HTTPError as exc:
            raise PublishError(f"can't reach {self.url}: {exc}") from None
        return _api_result(method, params, response)

    async def _aapi(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._async is None:
            self._async = httpx.AsyncClient(timeout=self.timeout)
        try:
            response = await self._async.post(**self._api_request(method, params))
        except httpx.HTTPError as exc:
            raise PublishError(f"can't reach {self.url}: {exc}") from None
        return _api_result(method, params, response)

    def send(self, client_id: str, data: Any) -> None:
        """Send ``data`` (JSON) to the connection ``client_id``, on whichever node holds it;
        ``NoSuchConnection`` when none does."""
        self._api("send", {"client": client_id, "data": data})

    async def asend(self, client_id: str, data: Any) -> None:
        await self._aapi("send", {"client": client_id, "data": data})

    def broadcast(self, data: Any) -> int:
        """Send ``data`` (JSON) to every connection on every node; how many got it."""
        return int(self._api("send_all", {"data": data}).get("delivered", 0))

    async def abroadcast(self, data: Any) -> int:
        return int((await self._aapi("send_all", {"data": data})).get("delivered", 0))

    def broadcast_channel(
        self, data: Any, channel: str, *, exclude_client: str | None = None
    ) -> tuple[int, str]:
        """Publish ``data`` (JSON) to ``channel`` (``/api/publish``), skipping the
        connection ``exclude_client``; the (offset, epoch) it got."""
        result = self._api("publish", _channel_params(data, channel, exclude_client))
        return int(result.get("offset", 0)), str(result.get("epoch", ""))

    async def abroadcast_channel(
        self, data: Any, channel: str, *, exclude_client: str | None = None
    ) -> tuple[int, str]:
        result = await self._aapi("publish", _channel_params(data, channel, exclude_client))
        return int(result.get("offset", 0)), str(result.get("epoch", ""))

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            await self._async.aclose()
            self._async = None

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


def _is_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def _channel_params(data: Any, channel: str, exclude_client: str | None) -> dict[str, Any]:
    params = {"channel": channel, "data": data}
    if exclude_client:
        params["exclude_client"] = exclude_client
    return params


def _api_result(method: str, params: dict[str, Any], response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 401:
        raise Unauthorized("missing or wrong API key", 401)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        raise PublishError(f"{method} refused: {response.status_code}", response.status_code)
    error = body.get("error")
    if isinstance(error, dict):
        if method == "send" and error.get("code") == 108:
            raise NoSuchConnection(f"no connection {params.get('client')!r} on any node")
        raise PublishError(f"{method} refused: {error.get('code')} {error.get('message')}")
    result = body.get("result")
    return result if isinstance(result, dict) else {}


def _result(response: httpx.Response) -> PublishResult:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 401:
        raise Unauthorized("missing or wrong API key", 401)
    if response.status_code != 200:
        reason = body.get("error", response.reason_phrase) if isinstance(body, dict) else ""
        raise PublishError(
            f"publish refused: {response.status_code} {reason}", response.status_code
        )
    return PublishResult(
        body["channel"], body["offset"], body["epoch"], body["id"], body["subscribers"]
    )
