"""The script connection (``brokers.redis_commands.Commands``): many publishes in flight
keep their order, and a server that hangs, forgets its scripts or goes away fails its
callers promptly and cleanly — the next publish works and continues the stream."""

from __future__ import annotations

import asyncio
import time

import pytest

from tidings.brokers.redis import RedisBroker
from tidings.brokers.redis_settings import RedisSettings
from tidings.core.broker import HistoryQuery, PublishOptions, PublishResult
from tidings.core.tick import Later
from tidings.exceptions import BrokerUnavailable
from tidings.testing import TIMEOUT
from tidings.testing.redis import RedisServer, redis_server

OPTIONS = PublishOptions(history_size=10_000, history_ttl=600.0)


@pytest.fixture
async def server():
    async with redis_server() as srv:
        yield srv


@pytest.fixture
async def broker(server: RedisServer):
    settings = RedisSettings(urls=(server.url,), timeout=1.0, connect_timeout=2.0)
    b = RedisBroker(settings)
    await b.start()
    try:
        yield b
    finally:
        await b.aclose()


async def test_thousands_in_flight_get_offsets_in_the_order_they_were_asked(
    broker: RedisBroker,
) -> None:
    results = await asyncio.gather(
        *(broker.publish("news", b"%d" % i, OPTIONS) for i in range(3000))
    )
    assert [r.position.offset for r in results] == list(range(1, 3001))
    assert len({r.position.epoch for r in results}) == 1
    history = await broker.history("news", HistoryQuery())
    assert [p.data for p in history.publications][-3:] == [b"2997", b"2998", b"2999"]


async def test_nowait_publishes_settle_in_order_as_replies_are_read(
    broker: RedisBroker,
) -> None:
    # The /pub fast path: one write for the loop iteration's publishes, each answered by a
    # synchronous callback in the read callback of its reply, in order.
    answers: list[int] = []

    def answered(result: PublishResult | None, error: BaseException | None) -> None:
        assert result is not None and error is None
        answers.append(result.position.offset)

    laters = [broker.publish_nowait("fast", b"%d" % i, OPTIONS) for i in range(50)]
    for later in laters:
        assert isinstance(later, Later)
        later.when_settled(answered)
    assert answers == []  # nothing is written before the next loop iteration
    last = laters[-1]
    assert last is not None
    assert (await last).position.offset == 50
    assert answers == list(range(1, 51))


async def test_a_hung_server_fails_publishes_within_the_timeout_then_they_work_again(
    server: RedisServer, broker: RedisBroker
) -> None:
    first = await broker.publish("news", b"1", OPTIONS)
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await broker.publish("news", b"lost?", OPTIONS)
        # 1 s timeout, checked every quarter of it: well before a slow CI machine's limit.
        assert time.monotonic() - started < TIMEOUT
        assert broker.health() != ""
    finally:
        server.resume()
    again = await broker.publish("news", b"2", OPTIONS)
    # The failed publish may or may not have run in Redis once it woke up; either way the
    # stream goes on from where Redis is, in the same epoch.
    assert again.position.epoch == first.position.epoch
    assert again.position.offset in (2, 3)


async def test_scripts_flushed_from_redis_fail_one_publish_and_are_loaded_again(
    server: RedisServer, broker: RedisBroker
) -> None:
    first = await broker.publish("news", b"1", OPTIONS)
    server.command("SCRIPT", "FLUSH")
    # Whatever was asked on the old connection did not run (NOSCRIPT): told, not retried,
    # so nothing is published twice.
    with pytest.raises(BrokerUnavailable, match="NOSCRIPT"):
        await broker.publish("news", b"not run", OPTIONS)
    again = await broker.publish("news", b"2", OPTIONS)
    assert (again.position.offset, again.position.epoch) == (2, first.position.epoch)


async def test_a_killed_connection_fails_what_was_in_flight_and_reconnects(
    server: RedisServer, broker: RedisBroker
) -> None:
    await broker.publish("news", b"1", OPTIONS)
    server.command("CLIENT", "KILL", "TYPE", "normal")
    # The next publish finds the connection gone (or in flight when it goes): it fails
    # with BrokerUnavailable or succeeds on a new connection; never hangs.
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                result = await broker.publish("news", b"2", OPTIONS)
                break
            except BrokerUnavailable:
                await asyncio.sleep(0.05)  # retry pacing, not synchronisation
    assert result.position.offset == 2
