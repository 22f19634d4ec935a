"""The SQLite store beyond the conformance suite: what survives a restart, trimming on
disk, batching, a failing commit, files it must refuse, and its settings."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tidings.app import make_backend
from tidings.brokers.memory import SWEEP_INTERVAL
from tidings.brokers.sqlite import SqliteBackend, SqliteBroker
from tidings.brokers.sqlite_file import store_path
from tidings.config import load_config
from tidings.core.broker import TOP, HistoryQuery, PublishOptions, PublishResult
from tidings.core.tick import Later, tick
from tidings.exceptions import BrokerError, BrokerUnavailable, ConfigError
from tidings.testing import FakeClock
from tidings.testing.conformance import RecordingHandler

KEEP = PublishOptions(history_size=100, history_ttl=600)


async def started(path: Path, clock: FakeClock | None = None) -> SqliteBroker:
    broker = SqliteBroker(SqliteBackend(str(path), clock=clock))
    broker.set_handler(RecordingHandler())
    await broker.start()
    return broker


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the file directly (only while no store holds its lock)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_a_restarted_store_keeps_offsets_epochs_history_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    broker = await started(path)
    keyed = PublishOptions(history_size=100, history_ttl=600, idempotency_key="k")
    first = await broker.publish("news", b'{"n":1}', keyed, event="ev", tags={"a": "b"})
    await broker.publish("news", b"two", KEEP, is_json=False)
    await broker.publish("quiet", b"1", PublishOptions())  # no history: the offset counts
    await broker.aclose()

    again = await started(path)
    result = await again.history("news", HistoryQuery())
    assert [(p.offset, p.epoch) for p in result.publications] == [
        (1, first.position.epoch),
        (2, first.position.epoch),
    ]
    one, two = result.publications
    assert (one.data, one.is_json, one.event, one.tags) == (b'{"n":1}', True, "ev", {"a": "b"})
    assert (two.data, two.is_json) == (b"two", False)
    assert (await again.history("quiet", TOP)).position.offset == 1
    duplicate = await again.publish("news", b'{"n":1}', keyed)
    assert duplicate.duplicate and duplicate.position == first.position
    third = await again.publish("news", b"3", KEEP)
    assert third.position.offset == 3 and third.position.epoch == first.position.epoch
    await again.aclose()


async def test_history_is_trimmed_by_size_and_ttl_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    clock = FakeClock()
    broker = await started(path, clock)
    small = PublishOptions(history_size=3, history_ttl=60, meta_ttl=3600)
    for i in range(5):
        await broker.publish("small", b"%d" % i, small)
    await broker.publish("brief", b"1", small)
    await broker.aclose()
    assert rows(path, "SELECT offset FROM history WHERE channel = 'small'") == [(3,), (4,), (5,)]

    clock.advance(61)  # past the TTL: what a restart loads is swept first
    again = await started(path, clock)
    assert (await again.history("brief", HistoryQuery())).publications == []
    assert (await again.history("brief", TOP)).position.offset == 1  # the stream stays
    await again.aclose()
    assert rows(path, "SELECT count(*) FROM history") == [(0,)]


async def test_expired_rows_are_swept_while_running(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    clock = FakeClock()
    broker = await started(path, clock)
    short = PublishOptions(10, 10, meta_ttl=20, idempotency_key="x", idempotency_ttl=10)
    await broker.publish("gone", b"1", short)
    clock.advance(SWEEP_INTERVAL + 1)
    await broker.publish("other", b"1", KEEP)  # its batch sweeps
    await broker.aclose()
    assert rows(path, "SELECT channel FROM streams") == [("other",)]
    assert rows(path, "SELECT channel FROM history") == [("other",)]
    assert rows(path, "SELECT count(*) FROM idempotency") == [(0,)]


async def test_a_stream_whose_meta_expired_comes_back_with_a_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    clock = FakeClock()
    broker = await started(path, clock)
    brief = PublishOptions(meta_ttl=100)
    old = await broker.publish("idle", b"1", brief)
    await broker.aclose()
    clock.advance(200)
    again = await started(path, clock)
    assert await again.stream_info(["idle"]) == {}
    new = await again.publish("idle", b"2", KEEP)
    assert new.position.offset == 1 and new.position.epoch != old.position.epoch
    await again.aclose()


async def test_one_loop_iteration_is_one_transaction_in_order(tmp_path: Path) -> None:
    broker = await started(tmp_path / "h.db")
    backend = broker.backend
    real_write = backend.file.write
    transactions: list[int] = []

    def counting_write(statements):  # type: ignore[no-untyped-def]
        transactions.append(len(statements))
        real_write(statements)

    backend.file.write = counting_write  # type: ignore[method-assign]
    handler = RecordingHandler()
    broker.set_handler(handler)
    await broker.subscribe("burst")
    results = await asyncio.gather(*(broker.publish("burst", b"%d" % i, KEEP) for i in range(200)))
    assert [r.position.offset for r in results] == list(range(1, 201))
    assert len(transactions) == 1  # all 200 were asked for in one loop iteration
    assert handler.offsets("burst") == list(range(1, 201))
    await broker.aclose()


async def test_nowait_publishes_are_answered_by_the_flush_that_commits_them(
    tmp_path: Path,
) -> None:
    # The HTTP front end's fast path: publishes queued during one read are committed and
    # answered synchronously when the read ends (Tick.flush), in call order; an answer
    # that publishes again is committed in the same pass, numbered after the batch.
    broker = await started(tmp_path / "h.db")
    handler = RecordingHandler()
    broker.set_handler(handler)
    await broker.subscribe("c")
    answers: list[int] = []
    chained: list[object] = []

    def answered(result: PublishResult | None, error: BaseException | None) -> None:
        assert result is not None and error is None
        answers.append(result.position.offset)
        if result.position.offset == 1:  # an answer's callback publishes again
            chained.append(broker.publish_nowait("c", b"chained", KEEP))

    first = broker.publish_nowait("c", b"1", KEEP)
    second = broker.publish_nowait("c", b"2", KEEP)
    assert isinstance(first, Later) and isinstance(second, Later)
    first.when_settled(answered)
    second.when_settled(answered)
    assert answers == []  # nothing is committed before the flush
    tick().flush()
    assert answers == [1, 2]
    (again,) = chained
    assert isinstance(again, Later) and (await again).position.offset == 3
    assert (await broker.publish("c", b"4", KEEP)).position.offset == 4
    assert handler.offsets("c") == [1, 2, 3, 4]
    history = await broker.history("c", HistoryQuery())
    assert [p.data for p in history.publications] == [b"1", b"2", b"chained", b"4"]
    await broker.aclose()


@pytest.mark.parametrize("sync", ["normal", "full"])
async def test_what_is_queued_when_the_store_closes_is_written(sync: str, tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    broker = SqliteBroker(SqliteBackend(str(path), sync=sync))
    broker.set_handler(RecordingHandler())
    await broker.start()
    queued = broker.publish_nowait("c", b"last words", KEEP)
    # The store first, before any loop iteration or flush could commit it.
    await broker.backend.close()
    await broker.memory.aclose()
    assert isinstance(queued, Later) and (await queued).position.offset == 1
    again = await started(path)
    history = await again.history("c", HistoryQuery())
    assert [p.data for p in history.publications] == [b"last words"]
    await again.aclose()


async def test_a_failed_commit_fails_its_batch_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    broker = await started(path)
    await broker.publish("a", b"1", KEEP)
    await broker.aclose()
    # A real SQLite error in the middle of the transaction: the second insert aborts.
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER fault BEFORE INSERT ON history WHEN NEW.data = CAST('poison' AS BLOB) "
        "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
    )
    conn.commit()
    conn.close()

    broker = await started(path)
    handler = RecordingHandler()
    broker.set_handler(handler)
    await broker.subscribe("a")
    keyed = PublishOptions(history_size=100, history_ttl=600, idempotency_key="k")
    outcomes = await asyncio.gather(
        broker.publish("a", b"2", keyed),
        broker.publish("b", b"poison", KEEP),
        broker.publish("a", b"3", KEEP),
        return_exceptions=True,
    )
    assert all(isinstance(o, BrokerUnavailable) for o in outcomes), outcomes
    assert "injected fault" in broker.health()
    assert handler.publications == []  # nothing delivered
    assert (await broker.history("a", TOP)).position.offset == 1
    assert (await broker.history("b", TOP)).position.offset == 0
    # The key was not recorded either: the retry publishes, at the next offset.
    retried = await broker.publish("a", b"2", keyed)
    assert not retried.duplicate and retried.position.offset == 2
    assert broker.health() == ""
    await broker.aclose()

    again = await started(path)
    history = await again.history("a", HistoryQuery())
    assert [(p.offset, p.data) for p in history.publications] == [(1, b"1"), (2, b"2")]
    assert (await again.history("b", TOP)).position.offset == 0
    await again.aclose()


async def test_remove_history_and_delete_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    broker = await started(path)
    for channel in ("kept", "removed", "deleted"):
        await broker.publish(channel, b"1", KEEP)
    old = await broker.publish("deleted", b"2", KEEP)
    await broker.remove_history("removed")
    await broker.delete_channel("deleted")
    await broker.aclose()
    again = await started(path)
    assert len((await again.history("kept", HistoryQuery())).publications) == 1
    removed = await again.history("removed", HistoryQuery())
    assert removed.publications == [] and removed.position.offset == 1
    assert await again.stream_info(["deleted"]) == {}
    new = await again.publish("deleted", b"3", KEEP)
    assert new.position.offset == 1 and new.position.epoch != old.position.epoch
    await again.aclose()


async def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    first = await started(path)
    with pytest.raises(BrokerError, match=r"locked \(another tidings serve uses this file\?\)"):
        await started(path)
    await first.aclose()
    await (await started(path)).aclose()  # free once the first closed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a database at all, just text " * 20, "file is not a database"),
        (None, "not a tidings history store"),
    ],
)
async def test_files_that_are_not_a_store_are_refused(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "h.db"
    if content is None:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE accounts (id INTEGER)")  # somebody else's database
        conn.commit()
        conn.close()
    else:
        path.write_bytes(content)
    with pytest.raises(BrokerError, match=message) as caught:
        await started(path)
    assert "\n" not in str(caught.value)


async def test_a_path_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="unable to open database file"):
        await started(tmp_path / "missing-dir" / "h.db")
    with pytest.raises(BrokerError, match="unable to open database file"):
        await started(tmp_path)  # a directory


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"history_path": "h.db", "workers": 2}, "workers = 2 needs a shared broker"),
        ({"broker": "sqlite:///h.db", "workers": 2}, "workers = 2 needs a shared broker"),
        (
            {"history_path": "h.db", "history_sync": "off"},
            r"history_sync = 'off'.*expected one of 'normal', 'full'",
        ),
        ({"broker": "sqlite://h.db"}, r"broker 'sqlite://h.db': write sqlite:///path"),
        ({"broker": "sqlite:///a.db", "history_path": "b.db"}, "name different files"),
        (
            {"broker": "redis://127.0.0.1:6379", "history_path": "h.db"},
            "history_path keeps a single node's history",
        ),
    ],
)
def test_store_settings_that_cannot_work_are_refused(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ={}, overrides=settings)


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"history_path": "h.db"}, "h.db"),
        ({"broker": "sqlite:///data/h.db"}, "data/h.db"),
        ({"broker": "sqlite:////var/lib/tidings/h.db"}, "/var/lib/tidings/h.db"),
        ({"broker": "sqlite:///h.db", "history_path": "h.db"}, "h.db"),
        ({}, ""),
    ],
)
def test_store_path_spellings(settings: dict[str, object], path: str) -> None:
    config = load_config(environ={}, overrides=settings)
    assert store_path(config.broker, config.history_path, config.history_sync) == path
    backend = make_backend(config)
    assert isinstance(backend.broker, SqliteBroker) == bool(path)
    if path:
        assert isinstance(backend.broker, SqliteBroker) and backend.broker.backend.path == path
