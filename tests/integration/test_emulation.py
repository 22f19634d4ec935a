"""/emulation: commands reach an emulated connection only through its session secret."""

from __future__ import annotations

import json

import httpx

from tidings.protocol.centrifuge import protobuf
from tidings.testing import TIMEOUT, running_server

SETTINGS = {
    "allow_anonymous_connect_without_token": True,
    "default_namespace": {
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
    },
}


async def next_reply(lines) -> dict:
    async for line in lines:
        line = line.removeprefix("data: ").strip()
        if line:
            return json.loads(line)
    raise AssertionError("stream ended")


async def test_session_not_client_id_addresses_the_connection():
    async with (
        running_server(**SETTINGS) as server,
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        http.stream(
            "POST", f"{server.url}/connection/http_stream", content=b'{"id":1,"connect":{}}'
        ) as stream,
    ):
        lines = stream.aiter_lines()
        connect = (await next_reply(lines))["connect"]
        assert connect["session"] != connect["client"]
        command = json.dumps({"id": 2, "subscribe": {"channel": "news"}})

        async def emulate(session: str) -> int:
            body = {"node": connect["node"], "session": session, "data": command}
            response = await http.post(f"{server.url}/emulation", json=body)
            return response.status_code

        # Other clients can learn a client id (presence, publication info): it's no key.
        assert await emulate(connect["client"]) == 404
        assert await emulate("") == 404
        assert await emulate(connect["session"]) == 204
        assert await next_reply(lines) == {"id": 2, "subscribe": {}}


async def test_bad_emulation_requests():
    async with running_server(**SETTINGS) as server, httpx.AsyncClient(timeout=TIMEOUT) as http:
        url = f"{server.url}/emulation"
        assert (await http.post(url, content=b"not json")).status_code == 400
        assert (await http.post(url, json={"session": "x", "data": 5})).status_code == 400
        body = {"node": "another-node", "session": "x", "data": "{}"}
        assert (await http.post(url, json=body)).status_code == 404
        assert (await http.get(url)).status_code == 405


async def test_hostile_requests_are_400():
    # Decode errors of every kind are a 400, never a failed handler; what decodes (the
    # 254-level payload) goes on to the session lookup (404).
    octets = {"Content-Type": "application/octet-stream"}

    def publish(levels: int) -> dict:
        return {"id": 2, "publish": {"channel": "c", "data": b"[" * levels + b"]" * levels}}

    async with running_server(**SETTINGS) as server, httpx.AsyncClient(timeout=TIMEOUT) as http:
        url = f"{server.url}/emulation"
        lying = b"\x1a\x80\xa3\xc3\x47"  # data: 150,000,000 bytes, in a 5-byte body
        assert (await http.post(url, content=lying, headers=octets)).status_code == 400
        for levels, status in ((254, 404), (255, 400), (1024, 400)):
            data = protobuf.encode_delimited("Command", publish(levels))
            body = protobuf.encode("EmulationRequest", {"session": "x", "data": data})
            assert (await http.post(url, content=body, headers=octets)).status_code == status
            line = publish(levels)
            text = json.dumps({**line, "publish": {"channel": "c", "data": 0}})
            text = text.replace("0}", line["publish"]["data"].decode() + "}")
            body = json.dumps({"session": "x", "data": text}).encode()
            assert (await http.post(url, content=body)).status_code == status
        deep = b'{"id":1,"connect":{"data":' + b"[" * 255 + b"]" * 255 + b"}}"
        stream = f"{server.url}/connection/http_stream"
        assert (await http.post(stream, content=deep)).status_code == 400
        connect = {"id": 1, "connect": {"data": b"[" * 255 + b"]" * 255}}
        body = protobuf.encode_delimited("Command", connect)
        assert (await http.post(stream, content=body, headers=octets)).status_code == 400
