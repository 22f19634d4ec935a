"""Publishing from application code: Django views, Flask handlers, Celery tasks, scripts.

``Publisher`` talks to ``POST /pub/<channel>`` over keep-alive HTTP. ``publish`` is plain
blocking code (no event loop needed); ``apublish`` is its asyncio twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from tidings.exceptions import PublishError, Unauthorized

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

    def _request(self, channel: str, data: Any, event: str | None, raw: bool) -> dict[str, Any]:
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
        return {
            "url": f"{self.url}/pub/{quote(channel, safe='')}",
            "content": body,
            "headers": headers,
            "params": params,
        }

    def publish(
        self, channel: str, data: Any, *, event: str | None = None, raw: bool = False
    ) -> PublishResult:
        """Publish and wait for the server's answer."""
        if self._sync is None:
            self._sync = httpx.Client(timeout=self.timeout)
        try:
            response = self._sync.post(**self._request(channel, data, event, raw))
        except httpx.HTTPError as exc:
            raise PublishError(f"can't reach {self.url}: {exc}") from None
        return _result(response)

    async def apublish(
        self, channel: str, data: Any, *, event: str | None = None, raw: bool = False
    ) -> PublishResult:
        """Publish from asyncio code."""
        if self._async is None:
            self._async = httpx.AsyncClient(timeout=self.timeout)
        try:
            response = await self._async.post(**self._request(channel, data, event, raw))
        except httpx.HTTPError as exc:
            raise PublishError(f"can't reach {self.url}: {exc}") from None
        return _result(response)

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
