"""tidings.testing.RecordingPublisher: the Publisher's API and code, recording instead of
publishing; refusing what the server refuses."""

from __future__ import annotations

import asyncio
import datetime
import threading
from decimal import Decimal

import pytest

from tidings import Publisher
from tidings.exceptions import PublishError
from tidings.testing import RecordingPublisher


def test_records_what_would_be_published() -> None:
    pub = RecordingPublisher()
    assert isinstance(pub, Publisher)
    first = pub.publish("orders", {"total": Decimal("9.50"), "day": datetime.date(2026, 3, 1)})
    second = pub.publish("orders", "shipped", event="status")
    pub.publish("other", '{"raw": true}', raw=True)
    assert pub.on("orders") == [{"total": "9.50", "day": "2026-03-01"}, "shipped"]
    assert pub.on("other") == [{"raw": True}]
    assert (first.offset, second.offset, first.epoch == second.epoch) == (1, 2, True)
    assert first.id == f"orders:1:{first.epoch}"
    recorded = pub.publications[1]
    assert (recorded.event, recorded.is_json, recorded.payload) == ("status", False, b"shipped")
    assert recorded.idempotency_key  # generated, as the real one does


async def test_apublish_records_too() -> None:
    pub = RecordingPublisher()
    result = await pub.apublish("live", [1, 2])
    assert (result.offset, pub.on("live")) == (1, [[1, 2]])


def test_unencodable_data_fails_as_it_would_for_real() -> None:
    pub = RecordingPublisher()
    with pytest.raises(TypeError):
        pub.publish("orders", {"what": object()})
    assert pub.publications == []


@pytest.mark.parametrize(
    ("channel", "data", "event", "reason"),
    [
        ("bad channel", 1, None, "bad channel name"),
        ("news", 1, "no spaces", "event name"),
        ("news", "[" * 300 + "]" * 300, None, "nested"),
    ],
)
def test_refuses_what_the_server_refuses(
    channel: str, data: object, event: str | None, reason: str
) -> None:
    pub = RecordingPublisher()
    raw = isinstance(data, str)
    with pytest.raises(PublishError) as info:
        pub.publish(channel, data, event=event, raw=raw)
    assert info.value.status == 400 and reason in info.value.reason
    assert pub.publications == [] and pub.attempts == 1


def test_a_repeated_key_publishes_once() -> None:
    pub = RecordingPublisher()
    first = pub.publish("jobs", 1, idempotency_key="job-7")
    again = pub.publish("jobs", 1, idempotency_key="job-7")
    assert (again.offset, again.duplicate, first.duplicate) == (first.offset, True, False)
    assert pub.on("jobs") == [1]
    # The same key on another channel is another publication.
    assert pub.publish("other", 1, idempotency_key="job-7").duplicate is False


def test_transient_failures_are_retried_like_real_ones() -> None:
    pub = RecordingPublisher()
    pub.fail_next(times=2)
    assert pub.publish("flaky", 1).offset == 1
    assert pub.attempts == 3 and pub.on("flaky") == [1]
    # Without a key, nothing is retried.
    pub.fail_next()
    with pytest.raises(PublishError, match="can't reach"):
        pub.publish("flaky", 2, idempotency_key="")
    assert pub.on("flaky") == [1]


def test_a_refusal_given_to_fail_next_is_raised_once() -> None:
    pub = RecordingPublisher()
    pub.fail_next(PublishError("publish refused: 403 no", 403, reason="no"))
    with pytest.raises(PublishError) as info:
        pub.publish("x", 1)
    assert (info.value.status, pub.attempts) == (403, 1)
    assert pub.publish("x", 1).offset == 1


def test_thread_safe_and_clear() -> None:
    pub = RecordingPublisher()
    threads = [
        threading.Thread(target=lambda: [pub.publish("many", n) for n in range(50)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.offset for p in pub.publications) == list(range(1, 201))
    pub.clear()
    assert pub.publications == []
    assert pub.publish("many", "next").offset == 201


def test_one_recorder_on_several_loops() -> None:
    pub = RecordingPublisher()
    asyncio.run(pub.apublish("loops", 1))
    asyncio.run(pub.apublish("loops", 2))
    assert pub.on("loops") == [1, 2]
