"""Same-origin checks between a browser's Origin and the Host header (RFC 6454)."""

from __future__ import annotations

import pytest

from tidings.protocol.http import Request
from tidings.server.request import origin_allowed, same_origin


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("https://app.example", "app.example:443"),
        ("https://app.example", "app.example"),
        ("wss://app.example", "app.example:443"),
        ("http://app.example", "app.example:80"),
        ("http://app.example:80", "app.example"),
        ("http://App.Example", "app.example"),
        ("http://127.0.0.1:8000", "127.0.0.1:8000"),
        ("http://[::1]:8000", "[::1]:8000"),
    ],
)
def test_same(origin: str, host: str) -> None:
    assert same_origin(origin, host)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://app.example", "app.example:443"),
        ("https://app.example", "app.example:80"),
        ("https://app.example:8443", "app.example"),
        ("http://127.0.0.1:8000", "127.0.0.1:8001"),
        ("http://evil.example", "app.example"),
        ("http://app.example.evil", "app.example"),
        ("null", "app.example"),
        ("http://app.example", ""),
        ("http://app.example", "app.example:x"),
        ("http://app.example", "app.example:99999"),
        ("http://app.example:x", "app.example"),
        ("http://evil.example@app.example", "app.example"),
        ("http://app.example", "evil@app.example"),
        ("http://app.example/path", "app.example"),
        ("http://app.example", "app.example/path"),
    ],
)
def test_different(origin: str, host: str) -> None:
    assert not same_origin(origin, host)


def request(**headers: str) -> Request:
    return Request("GET", "/ws/news", "/ws/news", {}, headers)


def test_origin_allowed_uses_the_list_before_host() -> None:
    same = {"host": "app.example:443", "origin": "https://app.example"}
    assert origin_allowed(request(**same), [])
    # With a list, only the list counts (the server's own origin must be listed too).
    assert not origin_allowed(request(**same), ["https://other.example"])
    assert origin_allowed(request(**same), ["*"])
    assert origin_allowed(request(host="app.example"), [])  # not a browser: no Origin
