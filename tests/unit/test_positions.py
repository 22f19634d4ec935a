import pytest

from tidings.exceptions import InvalidPosition
from tidings.protocol.positions import (
    format_position,
    format_positions,
    parse_positions,
    parse_since,
)


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
