"""``HttpTransport``: a ``Call`` as ``POST /pub/<channel>`` over keep-alive HTTP(S).

Blocking calls share one ``httpx.Client`` (thread-safe); asyncio calls get one ``HttpPool``
per event loop (``LoopLocal``): a few keep-alive connections with pipelined requests, so
many publishes in flight cost little more than one. A process that forks after
publishing (Celery's prefork pool, gunicorn) starts the child with new clients: the
parent's connections are dropped there, never closed, so the parent keeps them.
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from tidings.exceptions import NoSuchConnection, PublishError, Unauthorized
from tidings.protocol.http_response import ParsedResponse

from .http_pool import HttpPool, PoolError
from .transport import Call, LoopLocal

__all__ = ["RETRY_STATUSES", "HttpTransport"]

# Answers a later attempt may get past: the server or a proxy failing or overloaded
# (RFC 9110 §15.6), a request timeout (408) or too many connections from here (429).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# Failures on the way: nothing answered, and the request may or may not have arrived.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class HttpTransport:
    """Sends calls to the tidings server at ``url`` (``http://`` or ``https://``)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.verify = verify
        self._lock = threading.Lock()
        self._sync: httpx.Client | None = None
        self._pid = os.getpid()
        self._pools: LoopLocal[HttpPool] = LoopLocal(self._async_pool, _aclose)

    def _async_pool(self) -> HttpPool:
        return HttpPool(self.url, timeout=self.timeout, verify=self.verify)

    def _forked(self) -> None:
        # The connections are the parent's too: drop them unclosed (closing would end
        # the parent's TLS sessions and keep-alive connections).
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._sync = None
            self._pools = LoopLocal(self._async_pool, _aclose)

    def _request(self, call: Call) -> dict[str, Any]:
        if call.method == "api":  # the server API: params["method"], the body as JSON
            return {
                "url": f"{self.url}/api/{call.params['method']}",
                "content": call.data,
                "headers": {"X-API-Key": self.api_key, "Content-Type": "application/json"},
            }
        if call.method != "publish":
            raise ValueError(f"HttpTransport can't {call.method}")
        headers = {
            "X-API-Key": self.api_key,
            "Content-Type": "application/json" if call.is_json else "text/plain; charset=utf-8",
        }
        if call.idempotency_key:
            headers["Idempotency-Key"] = call.idempotency_key
        return {
            "url": f"{self.url}/pub/{quote(call.channel, safe='')}",
            "content": call.data,
            "headers": headers,
            "params": {
                **({"event": call.event} if call.event else {}),
                **call.params,  # exclude_client
            },
        }

    def call(self, call: Call) -> dict[str, Any]:
        request = self._request(call)
        with self._lock:
            self._forked()
            if self._sync is None:
                self._sync = httpx.Client(timeout=self.timeout, verify=self.verify)
            client = self._sync
        try:
            response = client.post(**request)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return _answer(response, call)

    async def acall(self, call: Call) -> dict[str, Any]:
        request = self._request(call)
        with self._lock:
            self._forked()
            pools = self._pools
        pool = await pools.get()
        path = request["url"][len(self.url) :]
        query = request.get("params")
        if query:
            path += "?" + urlencode(query)
        try:
            response = await pool.post(path, request["content"], request["headers"])
        except PoolError as exc:
            raise PublishError(
                f"can't reach {self.url}: {exc}", reason=str(exc), retryable=not exc.tls
            ) from None
        return _answer(response, call)

    def _unreachable(self, exc: httpx.HTTPError) -> PublishError:
        if isinstance(exc, httpx.TimeoutException):
            detail = f"no answer within {self.timeout:g} s"
        else:
            detail = " ".join(str(exc).split()) or type(exc).__name__
        return PublishError(
            f"can't reach {self.url}: {detail}",
            reason=detail,
            retryable=isinstance(exc, _TRANSIENT) and not _tls_refused(exc),
        )

    def close(self) -> None:
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None and os.getpid() == self._pid:
            client.close()

    async def aclose(self) -> None:
        self.close()
        await self._pools.aclose_current()


def _tls_refused(exc: BaseException) -> bool:
    """Whether a TLS handshake failed (an untrusted certificate, say): it fails again."""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain httpx and httpcore build is short
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _aclose(pool: HttpPool) -> None:
    await pool.aclose()


def _answer(response: httpx.Response | ParsedResponse, call: Call) -> dict[str, Any]:
    status = response.status_code
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if status == 200 and isinstance(body, dict) and call.method == "api":
        return _api_answer(call, body)
    if status == 200 and isinstance(body, dict):
        return body
    reason = response.reason_phrase or "no reason given"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        reason = str(body["error"].get("message", reason))
    elif isinstance(body, dict) and isinstance(body.get("error"), str):
        reason = body["error"]
    elif status == 200:
        reason = "the answer is not a JSON object"
    reason = " ".join(reason.split())[:200]
    message = f"publish refused: {status} {reason}"
    if status == 401:
        raise Unauthorized(message, status, reason=reason)
    raise PublishError(message, status, reason=reason, retryable=status in RETRY_STATUSES)


def _api_answer(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """A server API answer: its ``result``, or its ``error`` raised."""
    method = call.params["method"]
    error = body.get("error")
    if isinstance(error, dict):
        if method == "send" and error.get("code") == 108:
            client = orjson.loads(call.data).get("client")
            raise NoSuchConnection(f"no connection {client!r} on any node", 404)
        reason = f"{error.get('code')} {error.get('message')}"
        raise PublishError(f"{method} refused: {reason}", 400, reason=reason)
    result = body.get("result")
    return result if isinstance(result, dict) else {}
