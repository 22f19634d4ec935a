"""TLS on the native server: HTTPS (HTTP/1.1 by ALPN), wss://, SSE over TLS, with a
certificate chain the test makes."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
from integration_helpers import (
    API_KEY,
    AUTH,
    http_client,
    read_to_eof,
    subscribed,
    ws_connect,
    ws_json,
)
from websockets.exceptions import ConnectionClosed

from tidings import Publisher
from tidings.config import Config, load_config
from tidings.core.tokens import mint_token
from tidings.exceptions import ConfigError, PublishError
from tidings.server import Server
from tidings.testing import TIMEOUT, running_server
from tidings.testing.tls import TlsFiles, make_certificates

pytestmark = pytest.mark.usefixtures("no_server_errors")
BOTH_LOOPS = True  # see conftest.py


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certificates(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
async def tls_server(certs: TlsFiles) -> AsyncIterator[Server]:
    async with running_server(
        certfile=str(certs.server_cert), keyfile=str(certs.server_key)
    ) as srv:
        yield srv


async def publish(server: Server, verify: ssl.SSLContext, channel: str, data: str) -> None:
    async with http_client(server, verify) as c:
        resp = await c.post(f"/pub/{channel}", content=data, headers=AUTH)
    assert resp.status_code == 200, resp.text


async def test_https_is_http_1_1(tls_server: Server, certs: TlsFiles) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    async with http_client(tls_server, certs.client_context()) as c:
        health = await c.get("/health")
        published = await c.post("/pub/news", json={"n": 1}, headers=AUTH)
        info = await c.get("/pub/news", headers=AUTH)  # the same kept-alive connection
    assert health.status_code == 200 and health.http_version == "HTTP/1.1"
    assert published.json()["offset"] == 1 and info.json()["stored"] == 1


async def test_alpn_offers_http_1_1_only(tls_server: Server, certs: TlsFiles) -> None:
    context = certs.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", tls_server.port, ssl=context), TIMEOUT
    )
    try:
        tls = writer.get_extra_info("ssl_object")
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = await read_to_eof(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_wss_simple_endpoint(tls_server: Server, certs: TlsFiles) -> None:
    context = certs.client_context()
    async with ws_connect(tls_server, "/ws/news?format=raw", ssl=context) as ws:
        await subscribed(tls_server, "news")
        await publish(tls_server, context, "news", '{"over": "tls"}')
        assert await ws_json(ws) == {"over": "tls"}


async def test_wss_client_protocol(certs: TlsFiles) -> None:
    secret = "tidings-tls-tests-hmac-secret-0123456789"
    context = certs.client_context()
    async with (
        running_server(
            certfile=str(certs.server_cert),
            keyfile=str(certs.server_key),
            token_hmac_secret_key=secret,
            default_namespace={"allow_subscribe_for_client": True},
        ) as srv,
        ws_connect(srv, "/connection/websocket", ssl=context) as ws,
    ):
        connect = {"id": 1, "connect": {"token": mint_token(secret, "42")}}
        subscribe = {"id": 2, "subscribe": {"channel": "room"}}
        await ws.send(json.dumps(connect) + "\n" + json.dumps(subscribe))
        replies: dict[int, dict[str, object]] = {}
        async with asyncio.timeout(TIMEOUT):
            while len(replies) < 2:
                for line in str(await ws.recv()).split("\n"):
                    reply = json.loads(line)
                    replies[reply["id"]] = reply
        assert "connect" in replies[1] and "subscribe" in replies[2], replies
        await publish(srv, context, "room", '{"n": 1}')
        push = await ws_json(ws)
        assert push["push"]["pub"]["data"] == {"n": 1}


async def test_sse_over_tls(tls_server: Server, certs: TlsFiles) -> None:
    context = certs.client_context()
    async with (
        http_client(tls_server, context) as c,
        c.stream("GET", "/sse/feed?format=raw") as resp,
    ):
        assert resp.status_code == 200
        lines = resp.aiter_lines()
        await subscribed(tls_server, "feed")
        await publish(tls_server, context, "feed", "hello")
        async with asyncio.timeout(TIMEOUT):
            async for line in lines:
                if line.startswith("data:"):
                    assert line == "data: hello"
                    break


async def test_plain_http_on_the_tls_port_is_dropped(tls_server: Server, certs: TlsFiles) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answer = await read_to_eof(reader)
    writer.close()
    assert not answer.startswith(b"HTTP/1.1 200")
    async with http_client(tls_server, certs.client_context()) as c:
        assert (await c.get("/health")).status_code == 200


async def test_a_silent_handshake_times_out(certs: TlsFiles) -> None:
    # A client that opens TCP and never starts TLS is closed after request_timeout.
    async with running_server(
        certfile=str(certs.server_cert), keyfile=str(certs.server_key), request_timeout=0.3
    ) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await read_to_eof(reader) == b""
        writer.close()


async def test_an_untrusted_client_fails_its_own_check(tls_server: Server) -> None:
    async with http_client(tls_server) as c:  # the default trust store: not our CA
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await c.get("/health")


def test_certfile_and_keyfile_go_together(certs: TlsFiles) -> None:
    with pytest.raises(ConfigError, match="certfile and keyfile go together"):
        load_config(environ={"TIDINGS_CERTFILE": str(certs.server_cert)})
    config = load_config(
        environ={
            "TIDINGS_CERTFILE": str(certs.server_cert),
            "TIDINGS_KEYFILE": str(certs.server_key),
        }
    )
    assert (config.certfile, config.keyfile) == (str(certs.server_cert), str(certs.server_key))


@pytest.mark.parametrize("which", ["missing", "swapped", "not pem", "wrong key"])
async def test_unusable_files_refuse_to_start(
    which: str, certs: TlsFiles, tmp_path: object
) -> None:
    cert, key = str(certs.server_cert), str(certs.server_key)
    if which == "missing":
        key = str(certs.server_key) + ".gone"
        expected = "keyfile: can't read"
    elif which == "swapped":
        cert, key = key, cert
        expected = "not a PEM certificate and its private key"
    elif which == "not pem":
        cert = str(certs.ca_cert).replace("ca.crt", "junk.pem")
        with open(cert, "w") as fh:
            fh.write("not a certificate\n")
        expected = "not a PEM certificate"
    else:
        other = make_certificates(str(tmp_path))
        key = str(other.server_key)
        expected = "not a PEM certificate and its private key"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config(host="127.0.0.1", port=port, api_key=API_KEY, certfile=cert, keyfile=key)
    with pytest.raises(ConfigError, match=expected):
        await Server(config).start()
    # Refused before binding: the port is still free.
    with socket.create_server(("127.0.0.1", port)):
        pass


async def test_a_non_reader_over_tls_is_cut_off_as_slow(certs: TlsFiles) -> None:
    # Backpressure reads the TLS transport's buffer as it reads a TCP one's.
    context = certs.client_context()
    async with (
        running_server(
            certfile=str(certs.server_cert),
            keyfile=str(certs.server_key),
            max_outgoing_bytes=64 * 1024,
            shutdown_timeout=TIMEOUT,
        ) as srv,
        http_client(srv, context) as client,
    ):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
        # max_queue=1: the client library stops reading the socket once a message waits.
        async with ws_connect(
            srv,
            "/ws/flood?format=raw",
            sock=sock,
            ssl=context,
            server_hostname="127.0.0.1",
            max_queue=1,
            max_size=None,
        ) as ws:
            await subscribed(srv, "flood")
            for _ in range(2000):
                resp = await client.post("/pub/flood", content="x" * 16384, headers=AUTH)
                assert resp.status_code == 200
                if srv.app.slow_disconnects:
                    break
            assert srv.app.slow_disconnects == 1
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws.close_code == 3008


async def test_publisher_over_https(tls_server: Server, certs: TlsFiles) -> None:
    async with Publisher(tls_server.url, API_KEY, verify=certs.client_context()) as pub:
        first = await pub.apublish("secure", 1)
        second = await asyncio.to_thread(pub.publish, "secure", 2)
    assert (first.offset, second.offset) == (1, 2)
    async with Publisher(tls_server.url, API_KEY, retries=0) as untrusting:
        with pytest.raises(PublishError, match="CERTIFICATE_VERIFY_FAILED") as info:
            await untrusting.apublish("secure", 3)
    assert not info.value.retryable  # a certificate that fails now fails again
