"""The in-process backends: the conformance suites on several nodes (memory, and the
durable SQLite store, whose nodes share one file), and what only memory has."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.brokers import MemoryBackend, MemoryBroker, MemoryPresenceManager
from tidings.brokers.sqlite import SqliteBackend, SqliteBroker
from tidings.core.broker import TOP, HistoryQuery, PublishOptions
from tidings.testing import BROKER_CHECKS, PRESENCE_CHECKS, FakeClock, check_broker, check_presence


@pytest.mark.parametrize("check", sorted(BROKER_CHECKS))
async def test_broker_conformance(check: str) -> None:
    backend = MemoryBackend()
    await check_broker(lambda: MemoryBroker(backend), only=[check])


@pytest.mark.parametrize("check", sorted(BROKER_CHECKS))
async def test_sqlite_broker_conformance(check: str, tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "history.db"))
    await check_broker(lambda: SqliteBroker(backend), only=[check])


@pytest.mark.parametrize("sync", ["normal", "full"])
async def test_sqlite_broker_conformance_all_checks_on_one_file(sync: str, tmp_path: Path) -> None:
    """Every check after the other on one file: each opens the store again (a restart)."""
    backend = SqliteBackend(str(tmp_path / "history.db"), sync=sync)
    await check_broker(lambda: SqliteBroker(backend))


@pytest.mark.parametrize("check", sorted(BROKER_CHECKS))
async def test_broker_conformance_with_delivery_delay(check: str) -> None:
    """As across a network: deliveries and subscriptions take time."""
    backend = MemoryBackend()
    backend.delivery_delay = 0.002
    backend.subscribe_delay = 0.002
    await check_broker(lambda: MemoryBroker(backend), only=[check])


@pytest.mark.parametrize("check", sorted(PRESENCE_CHECKS))
async def test_presence_conformance(check: str) -> None:
    backend = MemoryBackend()
    await check_presence(lambda ttl: MemoryPresenceManager(backend, ttl=ttl), only=[check])


KEEP = PublishOptions(history_size=10, history_ttl=60)


async def test_history_expires_by_ttl_on_the_clock():
    clock = FakeClock()
    broker = MemoryBroker(MemoryBackend(clock=clock))
    await broker.publish("t", b"1", KEEP)
    clock.advance(30)
    await broker.publish("t", b"2", KEEP)
    clock.advance(31)
    result = await broker.history("t", HistoryQuery())
    assert [p.offset for p in result.publications] == [2]
    clock.advance(30)
    assert (await broker.history("t", HistoryQuery())).publications == []
    assert (await broker.history("t", TOP)).position.offset == 2


async def test_idle_streams_are_swept_and_come_back_with_a_new_epoch():
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    broker = MemoryBroker(backend)
    opts = PublishOptions(history_size=10, history_ttl=10, meta_ttl=100)
    first = await broker.publish("idle", b"1", opts)
    clock.advance(200)
    await broker.publish("busy", b"1", opts)  # publishing sweeps once a minute
    assert list(backend.streams) == ["busy"]
    again = await broker.publish("idle", b"2", opts)
    assert again.position.offset == 1 and again.position.epoch != first.position.epoch


async def test_idempotency_results_expire():
    clock = FakeClock()
    broker = MemoryBroker(MemoryBackend(clock=clock))
    keyed = PublishOptions(idempotency_key="k", idempotency_ttl=300)
    first = await broker.publish("c", b"1", keyed)
    assert (await broker.publish("c", b"1", keyed)).duplicate
    clock.advance(301)
    later = await broker.publish("c", b"1", keyed)
    assert not later.duplicate and later.position.offset == first.position.offset + 1


async def test_each_stream_has_its_own_epoch():
    broker = MemoryBroker()
    a = await broker.publish("a", b"1", KEEP)
    b = await broker.publish("b", b"1", KEEP)
    assert a.position.epoch != b.position.epoch


async def test_lost_deliveries_reach_no_handler():
    backend = MemoryBackend()
    backend.lose = lambda pub, receiver: pub.offset == 2
    got = []

    class Handler:
        def on_publication(self, pub):
            got.append(pub.offset)

    broker = MemoryBroker(backend)
    broker.set_handler(Handler())  # type: ignore[arg-type]
    await broker.subscribe("c")
    for i in range(3):
        await broker.publish("c", b"%d" % i, KEEP)
    assert got == [1, 3]
    history = await broker.history("c", HistoryQuery())
    assert [p.offset for p in history.publications] == [1, 2, 3]
