"""send_event/publish from Django code: Django's JSON, after the commit, never on rollback."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import AsyncClient, override_settings

from tidings.contrib.django import apublish, asend_event, get_publisher, publish, send_event
from tidings.contrib.django.testing import record_publications
from tidings.exceptions import PublishError
from tidings.testing.publisher import RecordingPublisher


def test_send_event_takes_django_sse_order_and_encodes_as_django_does(
    tidings_publications: RecordingPublisher,
) -> None:
    when = datetime.datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=datetime.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    send_event(
        "import_done",
        {"at": when, "day": when.date(), "price": decimal.Decimal("1.10"), "id": ident},
        channel="user-7",
    )
    (pub,) = tidings_publications.publications
    assert (pub.channel, pub.event, pub.is_json) == ("user-7", "import_done", True)
    # DjangoJSONEncoder: milliseconds, "Z" for UTC, Decimal and UUID as strings.
    assert pub.data == {
        "at": "2026-05-01T12:30:15.123Z",
        "day": "2026-05-01",
        "price": "1.10",
        "id": "12345678-1234-5678-1234-567812345678",
    }


def test_text_goes_as_text_and_events_are_optional(
    tidings_publications: RecordingPublisher,
) -> None:
    publish("news", "hello")
    publish("news", {"n": 1}, event="tick")
    assert [(p.data, p.is_json, p.event) for p in tidings_publications.publications] == [
        ("hello", False, None),
        ({"n": 1}, True, "tick"),
    ]


def test_what_django_cannot_encode_fails_in_the_caller(
    tidings_publications: RecordingPublisher,
) -> None:
    with pytest.raises(TypeError):
        publish("news", {"user": object()})
    assert tidings_publications.publications == []


@pytest.mark.django_db(transaction=True)
def test_inside_atomic_it_publishes_after_the_commit(
    tidings_publications: RecordingPublisher,
) -> None:
    with transaction.atomic():
        user = User.objects.create(username="ann")
        assert publish(f"user-{user.pk}", {"welcome": user.username}) is None
        assert tidings_publications.publications == []  # not before the commit
    assert tidings_publications.on(f"user-{user.pk}") == [{"welcome": "ann"}]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_publishes_nothing(
    tidings_publications: RecordingPublisher,
) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        User.objects.create(username="bob")
        send_event("created", {"user": "bob"}, channel="users")
        raise RuntimeError("the view failed")
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint rolled back
            send_event("created", {"user": "carl"}, channel="users")
            raise RuntimeError("inner")
        send_event("created", {"user": "dan"}, channel="users")
    assert tidings_publications.on("users") == [{"user": "dan"}]
    assert not User.objects.filter(username="bob").exists()


@pytest.mark.django_db(transaction=True)
def test_on_commit_false_and_the_setting_publish_at_once(
    tidings_publications: RecordingPublisher,
) -> None:
    with transaction.atomic():
        result = publish("now", {"a": 1}, on_commit=False)
        assert result is not None and result.offset == 1
        with override_settings(TIDINGS={"ON_COMMIT": False}):
            publish("now", {"a": 2})
        assert tidings_publications.on("now") == [{"a": 1}, {"a": 2}]


@pytest.mark.django_db(transaction=True)
def test_a_publish_failing_after_the_commit_is_logged_and_the_commit_stands(
    tidings_publications: RecordingPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    tidings_publications.fail_next(PublishError("refused", 403, reason="bad key"))
    with transaction.atomic():
        User.objects.create(username="eve")
        publish("users", {"user": "eve"})
    assert User.objects.filter(username="eve").exists()
    assert "publish to users after the commit failed" in caplog.text


def test_a_transient_failure_is_retried_with_the_same_key(
    tidings_publications: RecordingPublisher,
) -> None:
    tidings_publications.fail_next(times=2)
    publish("news", {"n": 1})
    assert tidings_publications.attempts == 3
    assert tidings_publications.on("news") == [{"n": 1}]


async def test_async_variants_publish_from_async_code() -> None:
    with record_publications() as recorder:
        result = await asend_event("ping", {"at": datetime.date(2026, 1, 2)}, channel="a")
        await apublish("b", "text")
    assert result.channel == "a"
    assert [(p.channel, p.data, p.event) for p in recorder.publications] == [
        ("a", {"at": "2026-01-02"}, "ping"),
        ("b", "text", None),
    ]


def test_the_publisher_follows_the_settings() -> None:
    with override_settings(TIDINGS={"URL": "http://127.0.0.1:9", "API_KEY": "k1"}):
        first = get_publisher()
        assert first.url == "http://127.0.0.1:9"
        assert get_publisher() is first  # one per URL and key
    with override_settings(TIDINGS={"URL": "http://127.0.0.1:10"}):
        assert get_publisher().url == "http://127.0.0.1:10"


def test_a_misspelt_setting_is_refused() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(TIDINGS={"API_KEYS": "x"}), pytest.raises(ImproperlyConfigured):
        publish("news", 1)


async def test_an_async_view_publishes_with_asend_event() -> None:
    with record_publications() as recorder:
        answer = await AsyncClient().get("/async-ping/")
    assert answer.status_code == 200 and answer.json() == {"offset": 1}
    assert recorder.on("async-news") == [{"by": "async"}]
