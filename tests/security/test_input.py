"""Bad input gets a precise answer, never an internal error (issue items 5, 6, 8, 9)."""

from __future__ import annotations

import httpx
import pytest
from integration_helpers import raw_connection, raw_request, read_response

from tidings.testing import TIMEOUT, running_server

API = {"X-API-Key": "test-key"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [254, 255, 1000, 1024])
async def test_deeply_nested_json_on_the_server_api_is_a_bad_request(depth: int) -> None:
    async with running_server() as srv, httpx.AsyncClient(timeout=TIMEOUT) as http:
        body = '{"channel": "deep", "data": ' + nested(depth) + "}"
        resp = await http.post(f"{srv.url}/api/publish", content=body, headers=API)
        if depth == 1024:  # with the request object around it, deeper than JSON parsing goes
            assert resp.status_code == 400
            return
        assert resp.status_code == 200
        if depth <= 254:
            assert resp.json()["result"]["offset"] == 1
        else:
            assert resp.json()["error"]["code"] == 107  # not 100 (internal)


@pytest.mark.parametrize("depth", [255, 1024])
async def test_deeply_nested_json_on_pub_is_a_400(depth: int) -> None:
    async with running_server() as srv, httpx.AsyncClient(timeout=TIMEOUT) as http:
        resp = await http.post(f"{srv.url}/pub/deep", content=nested(depth), headers=API)
        assert resp.status_code == 400 and "nested" in resp.json()["error"]


async def test_a_valid_request_before_a_malformed_one_keeps_its_answer() -> None:
    async with running_server() as srv:
        data = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n"
        first = await raw_request(srv, data)
        assert first.status == 200


async def test_a_refused_upload_is_answered_while_the_client_is_still_sending() -> None:
    """Closing a socket with unread input resets it, which can destroy the 413 before the
    client reads it: the server half-closes and drains instead (RFC 9112 §9.6)."""
    async with running_server() as srv:
        for _ in range(5):
            async with raw_connection(srv) as (reader, writer):
                writer.write(b"POST /pub/big HTTP/1.1\r\nHost: x\r\nX-API-Key: test-key\r\n")
                writer.write(b"Content-Length: 50000000\r\n\r\n" + b"x" * 2_000_000)
                response = await read_response(reader)
                assert response.status == 413
