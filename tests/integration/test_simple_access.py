"""Which channels the credential-less simple endpoints may subscribe to."""

from __future__ import annotations

import httpx
import pytest

from tidings.testing import TIMEOUT, running_server

SETTINGS = {
    "namespaces": {
        "private": {"allow_subscribe_for_client": True},  # a client-protocol namespace
        "public": {"simple_subscribe": True},
    }
}


@pytest.mark.parametrize(
    ("channels", "status"),
    [
        ("news", 200),  # no namespace
        ("misc:1", 200),  # a namespace nobody configured: the zero-config hub
        ("public:1", 200),  # configured and opened to the simple endpoints
        ("private:1", 403),  # configured for the client protocol: needs a token
        ("news,private:1", 403),  # one closed channel refuses the whole request
        ("$news", 403),  # private channels always need a subscription token
        ("dm:#42", 403),  # so do user-limited ones
    ],
)
@pytest.mark.parametrize("transport", ["sse", "stream", "lp", "ws"])
async def test_simple_endpoints_respect_namespaces(channels: str, status: int, transport: str):
    async with running_server(longpoll_timeout=0.01, **SETTINGS) as server:
        url = f"{server.url}/{transport}/{channels.replace('#', '%23').replace('$', '%24')}"
        headers = {}
        if transport == "ws":
            headers = {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            }
        async with (
            httpx.AsyncClient(timeout=TIMEOUT) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            expected = 101 if (transport == "ws" and status == 200) else status
            assert response.status_code == expected
            if status == 403:
                await response.aread()
                assert "token" in response.json()["error"]
