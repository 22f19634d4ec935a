"""Per-address limits: connections open at once and new connections a second."""

from __future__ import annotations

from contextlib import AsyncExitStack

from integration_helpers import raw_connection, read_response, until

from tidings.app import AddressLimits
from tidings.config import Config
from tidings.testing import FakeClock, running_server


class Conn:
    """A stand-in connection: the limits only count them."""


def test_open_connections_per_address():
    limits = AddressLimits(Config(max_connections_per_ip=2, connection_rate_per_ip=0), FakeClock())
    a, b, c = Conn(), Conn(), Conn()
    assert limits.admit(a, "192.0.2.1") and limits.admit(b, "192.0.2.1")  # type: ignore[arg-type]
    assert not limits.admit(c, "192.0.2.1")  # type: ignore[arg-type]
    assert limits.admit(c, "192.0.2.2")  # type: ignore[arg-type]  # another address
    limits.forget(a)  # type: ignore[arg-type]
    assert limits.admit(Conn(), "192.0.2.1")  # type: ignore[arg-type]


def test_new_connections_per_second_per_address():
    clock = FakeClock()
    config = Config(max_connections_per_ip=0, connection_rate_per_ip=2, connection_burst_per_ip=3)
    limits = AddressLimits(config, clock)
    admitted = [limits.admit(Conn(), "198.51.100.7") for _ in range(5)]  # type: ignore[arg-type]
    assert admitted == [True, True, True, False, False]
    clock.advance(1)  # two more tokens
    assert [limits.admit(Conn(), "198.51.100.7") for _ in range(3)] == [True, True, False]  # type: ignore[arg-type]
    clock.advance(60)
    limits.prune()
    assert limits.buckets == {}  # full buckets are forgotten: memory follows recent addresses


def test_loopback_is_exempt_unless_asked():
    limits = AddressLimits(Config(max_connections_per_ip=1), FakeClock())
    assert all(limits.admit(Conn(), "127.0.0.1") for _ in range(3))  # type: ignore[arg-type]
    assert all(limits.admit(Conn(), "::1") for _ in range(3))  # type: ignore[arg-type]
    strict = AddressLimits(Config(max_connections_per_ip=1, limit_loopback=True), FakeClock())
    assert strict.admit(Conn(), "127.0.0.1") and not strict.admit(Conn(), "127.0.0.1")  # type: ignore[arg-type]


async def test_a_connection_over_the_address_limit_gets_429_and_others_go_on():
    async with running_server(max_connections_per_ip=2, limit_loopback=True) as srv:
        async with AsyncExitStack() as stack:
            for _ in range(2):
                await stack.enter_async_context(raw_connection(srv))
            await until(lambda: len(srv.app.connections) == 2, "two admitted")
            async with raw_connection(srv) as (reader, _):
                assert (await read_response(reader)).status == 429
        await until(lambda: not srv.app.connections, "the connections closed")
        async with raw_connection(srv) as (reader, writer):
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader)).status == 200
