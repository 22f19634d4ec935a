"""Cross-origin EventSource with credentials: allowed for an origin listed by name only."""

from __future__ import annotations

import httpx

from tidings.testing import TIMEOUT, running_server

PAGE = "http://127.0.0.1:8000"


async def allow_credentials(allowed: list[str], origin: str) -> tuple[int, str | None]:
    async with (
        running_server(allowed_origins=allowed) as server,
        httpx.AsyncClient(timeout=TIMEOUT) as http,
    ):
        headers = {"Origin": origin}
        async with http.stream("GET", f"{server.url}/sse/news", headers=headers) as answer:
            return answer.status_code, answer.headers.get("access-control-allow-credentials")


async def test_a_named_origin_may_send_cookies_and_read_the_answer() -> None:
    assert await allow_credentials([PAGE], PAGE) == (200, "true")


async def test_a_wildcard_never_allows_credentials() -> None:
    status, credentials = await allow_credentials(["*"], PAGE)
    assert (status, credentials) == (200, None)


async def test_an_origin_not_listed_is_refused() -> None:
    status, credentials = await allow_credentials([PAGE], "http://evil.example")
    assert (status, credentials) == (403, None)
