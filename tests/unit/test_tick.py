"""The loop's batched pass (core/tick.py): when queued work runs, and how a Later settles."""

from __future__ import annotations

import asyncio

import pytest

from tidings.core.tick import Later, Tick, tick


async def test_queued_work_runs_on_the_next_iteration_without_a_flush() -> None:
    ran = asyncio.Event()
    tick().soon(ran.set)
    assert not ran.is_set()  # not inline
    await asyncio.wait_for(ran.wait(), 10)


async def test_a_flush_runs_the_pass_at_once_and_only_once() -> None:
    calls: list[str] = []
    t = Tick()
    t.soon(lambda: calls.append("a"))
    t.flush()
    assert calls == ["a"]
    # Two iterations, more than the scheduled pass needed: it was cancelled.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert calls == ["a"]


async def test_work_queued_inside_a_pass_runs_before_the_pass_ends() -> None:
    calls: list[str] = []
    t = Tick()

    def first() -> None:
        calls.append("first")
        t.soon(lambda: calls.append("queued by first"))
        t.flush()  # inside the pass: does nothing now
        calls.append("first done")

    t.soon(first)
    t.flush()
    assert calls == ["first", "first done", "queued by first"]


async def test_a_failing_callback_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    t = Tick()

    def broken() -> None:
        raise RuntimeError("boom")

    t.soon(broken)
    t.soon(lambda: calls.append("after"))
    t.flush()
    assert calls == ["after"]
    assert "batched callback" in caplog.text


async def test_each_loop_has_its_own_tick() -> None:
    assert tick() is tick(asyncio.get_running_loop())
    other = asyncio.new_event_loop()
    try:
        assert tick(other) is not tick()
    finally:
        other.close()


async def test_a_later_runs_its_callbacks_synchronously_when_settled() -> None:
    later: Later[int] = Later()
    seen: list[tuple[int | None, BaseException | None]] = []
    later.when_settled(lambda v, e: seen.append((v, e)))
    assert seen == []
    later.settle(7)
    assert seen == [(7, None)]
    later.settle(8)  # settled once
    later.when_settled(lambda v, e: seen.append((v, e)))  # late: runs at once
    assert seen == [(7, None), (7, None)]


async def test_then_maps_values_and_errors() -> None:
    later: Later[int] = Later()

    def double(value: int | None, error: BaseException | None) -> int:
        if error is not None:
            raise ValueError("mapped") from error
        assert value is not None
        return value * 2

    doubled = later.then(double)
    later.settle(21)
    assert await doubled == 42

    failing: Later[int] = Later()
    mapped = failing.then(double)
    failing.settle(error=KeyError("x"))
    with pytest.raises(ValueError, match="mapped"):
        await mapped


async def test_awaiting_a_later_waits_for_its_settling() -> None:
    later: Later[str] = Later()
    waiter = asyncio.ensure_future(_wait(later))
    await asyncio.sleep(0)  # one iteration: the waiter is parked on the Later
    assert not waiter.done()
    tick().soon(lambda: later.settle("done"))
    assert await asyncio.wait_for(waiter, 10) == "done"


async def _wait(later: Later[str]) -> str:
    return await later
