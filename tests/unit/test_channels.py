import pytest

from tidings.core.channels import ChannelOptions, Namespaces, namespace_of, validate_channel
from tidings.exceptions import ConfigError, InvalidChannel


@pytest.mark.parametrize(
    "name", ["dialog#42,43", "news", "chat:1", "a-b_c.d", "user@x/y=z!~", "$private", "dm#42"]
)
def test_valid_names(name):
    assert validate_channel(name) == name


@pytest.mark.parametrize(
    "name", ["", "a b", "a;b", "a,b", "x" * 256, ":x", "x:", "ünï", "a\nb", "a?b"]
)
def test_invalid_names(name):
    with pytest.raises(InvalidChannel):
        validate_channel(name)


def test_namespace_of():
    assert namespace_of("chat:room:1") == "chat"
    assert namespace_of("news") == ""
    assert namespace_of("$chat:secret") == "chat"
    assert namespace_of("$secret") == ""


def test_namespaces_from_configuration():
    ns = Namespaces.from_mapping(
        {
            "history_size": 50,
            "namespaces": {"chat": {"history_size": 5}, "live": {"history_ttl": 0}},
        }
    )
    assert ns.options("news") == ChannelOptions(history_size=50)
    assert ns.options("chat:1").history_size == 5
    assert ns.options("chat:1").history_ttl == ChannelOptions().history_ttl
    assert ns.options("live:x").history_ttl == 0
    assert ns.options("live:x").history_size == 50


@pytest.mark.parametrize(
    "data",
    [
        {"history_size": -1},
        {"history_size": "5"},
        {"history_ttl": -3},
        {"namespaces": {"chat": {"nope": 1}}},
        {"namespaces": {"chat": 5}},
        {"namespaces": {"chat": {"allow_subscribe": "yes"}}},
    ],
)
def test_bad_namespace_configuration(data):
    with pytest.raises(ConfigError):
        Namespaces.from_mapping(data)
