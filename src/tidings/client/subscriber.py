"""``tidings subscribe``: print messages as they come, over the chunked stream endpoint."""

from __future__ import annotations

import sys
from urllib.parse import quote

import httpx

__all__ = ["subscribe_print"]


async def subscribe_print(
    url: str, channels: list[str], since: str | None, last: int | None, raw: bool
) -> int:
    """Stream ``/stream/<channels>`` to standard output, one message per line."""
    params: dict[str, str] = {}
    if since:
        params["since"] = since
    if last is not None:
        params["last"] = str(last)
    if raw:
        params["format"] = "raw"
    path = ",".join(quote(ch, safe=":@/=!~$") for ch in channels)
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client,
        client.stream("GET", f"{url.rstrip('/')}/stream/{path}", params=params) as response,
    ):
        if response.status_code != 200:
            await response.aread()
            print(f"tidings: {response.status_code} {response.text}", file=sys.stderr)
            return 1
        async for line in response.aiter_lines():
            print(line, flush=True)
    return 0
