import secrets
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.exceptions import InvalidPosition
from tidings.protocol.positions import (
    format_position,
    format_positions,
    is_epoch,
    parse_positions,
    parse_since,
)

URLSAFE = set(string.ascii_letters + string.digits + "-_")


def test_round_trip_with_namespaced_channels():
    positions = {"news": (12, "k3x9"), "chat:1": (4, "k3x9")}
    text = format_positions(positions)
    assert text == "news:12:k3x9,chat:1:4:k3x9"
    assert parse_positions(text) == positions


def test_etag_quotes_and_weak_prefix_are_ignored():
    assert parse_positions('W/"news:3:ab"') == {"news": (3, "ab")}
    assert parse_positions(f'"{format_position("a:b:c", 7, "e")}"') == {"a:b:c": (7, "e")}


def test_empty_epoch_is_kept_empty():
    assert parse_positions("news:5:") == {"news": (5, "")}


@pytest.mark.parametrize(
    "text", ["news", "news:x:ab", ":1:ab", "news:-1:ab", "a:1:b,,", "news:\u00b2:ab"]
)
def test_malformed_positions_raise(text):
    with pytest.raises(InvalidPosition):
        parse_positions(text)


def test_too_long_position_is_refused():
    with pytest.raises(InvalidPosition):
        parse_positions("a:1:b," * 5000)


def test_since_bare_offset_applies_to_every_channel():
    assert parse_since("7", ["a", "b"]) == {"a": (7, ""), "b": (7, "")}


def test_since_per_channel():
    assert parse_since("chat:1:3,news:9", ["chat:1", "news"]) == {
        "chat:1": (3, ""),
        "news": (9, ""),
    }


@pytest.mark.parametrize("text", ["x", "news:", "news:1a", ":5", "\u00b2", "news:\u00b3"])
def test_since_malformed(text):
    with pytest.raises(InvalidPosition):
        parse_since(text, ["news"])


# Epochs come back in SSE id: lines and ETag headers: only the broker's alphabet passes.


@pytest.mark.parametrize(
    "epoch",
    [
        "x\nevent: evil",
        "x\r\ndata: evil",
        "x\rdata",
        "x\x00y",
        "a b",
        'a"b',
        "<script>",
        "é",
        "a=",
        "a+b/c",
        "a" * 65,
    ],
)
def test_epoch_outside_the_urlsafe_alphabet_is_refused(epoch):
    assert not is_epoch(epoch)
    with pytest.raises(InvalidPosition):
        parse_positions(f"news:1:{epoch}")
    with pytest.raises(InvalidPosition):
        parse_positions(f"news:1:k3x9,chat:2:{epoch}")


@pytest.mark.parametrize("epoch", ["", "k3x9Qa1b", "A-_z09", "a" * 64, secrets.token_urlsafe(6)])
def test_urlsafe_epochs_are_accepted(epoch):
    assert parse_positions(f"news:1:{epoch}") == {"news": (1, epoch)}


@given(st.text(max_size=80))
def test_a_parsed_epoch_never_holds_anything_but_the_alphabet(text):
    try:
        positions = parse_positions(text)
    except InvalidPosition:
        return
    for _, epoch in positions.values():
        assert set(epoch) <= URLSAFE and len(epoch) <= 64
