"""When queued bytes are written (server/outbox.py's Flusher): at the end of the iteration on
an idle server; held for as long as the last pass took, at most ``write_delay``, on a busy
one, so that more messages share each connection's write."""

from __future__ import annotations

import asyncio
from time import perf_counter
from types import SimpleNamespace
from typing import Any

from tidings.core.tick import sends
from tidings.server.outbox import Flusher

TIMEOUT = 10.0


class Conn:
    """Stands in for an ``Outbox``: its write takes ``cost`` seconds of CPU."""

    def __init__(self, cost: float = 0.0) -> None:
        self.cost = cost
        self.written: list[float] = []
        self.done = asyncio.Event()

    def flush(self) -> int:
        start = perf_counter()
        while perf_counter() - start < self.cost:
            pass  # a write to a socket: CPU spent, no yielding to the loop
        self.written.append(perf_counter())
        self.done.set()
        return 100


def flusher(write_delay: float) -> tuple[Flusher, Any]:
    app = SimpleNamespace(config=SimpleNamespace(write_delay=write_delay), bytes_out=0)
    return Flusher(asyncio.get_running_loop(), app), app  # type: ignore[arg-type]


async def written(conn: Conn) -> float:
    await asyncio.wait_for(conn.done.wait(), TIMEOUT)
    conn.done.clear()
    return conn.written[-1]


def in_this_iteration(conn: Conn) -> asyncio.Future[bool]:
    """Whether ``conn`` was written by the time callbacks queued now have run."""
    seen: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    count = len(conn.written)
    asyncio.get_running_loop().call_soon(lambda: seen.set_result(len(conn.written) > count))
    return seen


async def test_an_idle_server_writes_at_the_end_of_the_iteration() -> None:
    f, app = flusher(0.005)
    conn = Conn()
    f.mark(conn)
    assert not conn.written  # not inline: more may be queued in this iteration
    assert await in_this_iteration(conn)
    assert app.bytes_out == 100


async def held_after_a_pass_of(cost: float, write_delay: float) -> float:
    """How long a pass asked for right after one of ``cost`` seconds waited."""
    f, _ = flusher(write_delay)
    conn = Conn(cost=cost)
    f.mark(conn)
    await written(conn)
    conn.cost = 0.0
    asked = perf_counter()
    f.mark(conn)  # within ``cost`` of the last pass's end: busy
    assert not await in_this_iteration(conn)
    return await written(conn) - asked


async def test_a_pass_asked_for_right_after_a_long_one_waits_as_long_as_it_took() -> None:
    held = await held_after_a_pass_of(0.03, write_delay=0.1)
    assert held >= 0.025, held  # about the 30 ms the last pass took (timers count in ms)


async def test_the_hold_is_at_most_write_delay() -> None:
    held = await held_after_a_pass_of(0.5, write_delay=0.01)
    assert 0.008 <= held < 0.4, held  # 10 ms, far from the 500 ms the pass took


async def test_after_an_idle_spell_longer_than_the_last_pass_nothing_waits() -> None:
    f, _ = flusher(0.1)
    conn = Conn(cost=0.005)
    f.mark(conn)
    await written(conn)
    conn.cost = 0.0
    await asyncio.sleep(0.05)  # the loop idles ten times the pass's length
    f.mark(conn)
    assert await in_this_iteration(conn)


async def test_write_delay_zero_never_holds() -> None:
    f, _ = flusher(0.0)
    conn = Conn(cost=0.03)
    f.mark(conn)
    await written(conn)
    f.mark(conn)
    assert await in_this_iteration(conn)


async def test_connections_marked_while_held_share_the_pass() -> None:
    f, _ = flusher(0.1)
    first, second = Conn(cost=0.02), Conn()
    f.mark(first)
    await written(first)
    first.cost = 0.0
    f.mark(first)
    f.mark(second)  # marked during the hold: written in the same pass
    await written(first)
    await written(second)
    assert abs(first.written[-1] - second.written[-1]) < 0.005


async def test_broker_commands_queued_in_the_iteration_go_out_before_the_pass() -> None:
    # A pass may take milliseconds: the Redis scripts of the publishes read in this
    # iteration are sent first, so their replies (and the publish answers) don't wait.
    f, _ = flusher(0.005)
    order: list[str] = []

    class Recording(Conn):
        def flush(self) -> int:
            order.append("write")
            return super().flush()

    conn = Recording()
    f.mark(conn)  # the pass is asked for first…
    sends().soon(lambda: order.append("commands"))  # …the commands after it
    await written(conn)
    assert order == ["commands", "write"]
