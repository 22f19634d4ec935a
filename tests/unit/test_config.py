import re
from dataclasses import fields
from pathlib import Path

import pytest

from tidings.config import BOUNDS, Bound, Config, is_loopback_host, load_config
from tidings.core.channels import Namespaces
from tidings.exceptions import ConfigError

CONFIGURATION_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_defaults_are_safe():
    config = load_config(environ={})
    assert config.host == "127.0.0.1"
    assert config.api_key == ""
    assert config.allowed_origins == []
    assert config.stats_open is False


def test_file_then_environment_then_overrides(tmp_path):
    path = tmp_path / "tidings.toml"
    path.write_text(
        'port = 9001\napi_key = "from-file"\nhistory_size = 7\n'
        "[namespaces.chat]\nhistory_size = 2\n"
        '[templates.js]\ntemplate = "<script>p(~text~)</script>"\ncontent_type = "text/html"\n'
    )
    config = load_config(
        path,
        environ={"TIDINGS_PORT": "9002", "TIDINGS_ALLOWED_ORIGINS": "https://a.example, b"},
        overrides={"api_key": "from-flag", "host": None},
    )
    assert config.port == 9002
    assert config.api_key == "from-flag"
    assert config.host == "127.0.0.1"
    assert config.allowed_origins == ["https://a.example", "b"]
    assert config.channel_namespaces().options("chat:1").history_size == 2
    assert config.channel_namespaces().options("x").history_size == 7
    assert config.message_templates()["js"].content_type == "text/html"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope = 1\n", "unknown setting"),
        ('port = "x"\n', "integer"),
        ("port = 70000\n", "port"),
        ("stats_open = 1\n", "true or false"),
        ("[templates.t]\nheader = 'x'\n", "template"),
        ("port = \n", "tidings.toml"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "tidings.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_bad_environment_values():
    with pytest.raises(ConfigError, match="integer"):
        load_config(environ={"TIDINGS_PORT": "eighty"})
    with pytest.raises(ConfigError, match="true or false"):
        load_config(environ={"TIDINGS_DEMO": "maybe"})


def test_missing_file():
    with pytest.raises(ConfigError, match="can't read"):
        load_config("/nonexistent/tidings.toml", environ={})


# Bounds: every number has a range (BOUNDS), checked by Config.validate at start-up.


def test_every_numeric_setting_has_bounds():
    numeric = {f.name for f in fields(Config) if f.type in ("int", "float")}
    assert numeric == set(BOUNDS)


def test_the_defaults_are_within_bounds():
    for name, bound in BOUNDS.items():
        assert bound.allows(getattr(Config(), name)), name


def edges(bound: Bound) -> tuple[list[float], list[float]]:
    """Values at the edges of ``bound`` that it allows, and those just past them."""
    step = 0.001 if bound.above else 1
    allowed = [bound.low + step if bound.above else bound.low, bound.high]
    return allowed, [bound.low if bound.above else bound.low - 1, bound.high + step]


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_each_bound_admits_its_edges_and_no_further(name):
    bound = BOUNDS[name]
    allowed, refused = edges(bound)
    kind = type(getattr(Config(), name))
    # Several workers need a shared broker (never connected to here).
    other = {"broker": "redis://127.0.0.1:1"} if name == "workers" else {}
    for value in allowed:
        Config(**{name: kind(value)}, **other).validate()
    for value in refused:
        with pytest.raises(ConfigError, match=f"^{name} = .* is out of range: allowed"):
            Config(**{name: value}, **other).validate()


def test_several_workers_need_a_shared_broker():
    Config(workers=1).validate()
    with pytest.raises(ConfigError, match=r"^workers = 2 needs a shared broker: .*--broker redis"):
        Config(workers=2).validate()
    Config(workers=2, broker="redis://127.0.0.1:1").validate()
    assert (
        load_config(environ={"TIDINGS_WORKERS": "3", "TIDINGS_BROKER": "redis://h:1"}).workers == 3
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a time
        ("ping_interval = 1", None),
        ("ping_interval = 0", "ping_interval = 0 is out of range: allowed 1 to 3,600 seconds"),
        ("ping_interval = 3601", "ping_interval = 3601 is out of range"),
        ("request_timeout = 86400", None),
        ("request_timeout = 0", "allowed more than 0 up to 86,400 seconds"),
        # a size
        ("max_body_bytes = 1024", None),
        (
            "max_body_bytes = 1023",
            "max_body_bytes = 1023 is out of range: allowed 1,024 to 67,108,864 bytes",
        ),
        ("max_outgoing_bytes = 268435457", "max_outgoing_bytes = 268435457 is out of range"),
        # a count
        ("max_connections = 1000000", None),
        ("max_connections = 1000001", "allowed 1 to 1,000,000$"),
        ("client_max_channels = 0", "client_max_channels = 0 is out of range"),
        ("sse_retry_ms = 99", "allowed 100 to 3,600,000 milliseconds"),
    ],
)
def test_bounds_in_a_file(tmp_path, text, message):
    path = tmp_path / "tidings.toml"
    path.write_text(text + "\n")
    if message is None:
        load_config(path, environ={})
    else:
        with pytest.raises(ConfigError, match=message):
            load_config(path, environ={})


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0"])
def test_bounds_in_the_environment(text):
    with pytest.raises(ConfigError, match=r"ping_interval = .* is out of range"):
        load_config(environ={"TIDINGS_PING_INTERVAL": text})


def test_a_bool_is_not_a_number():
    with pytest.raises(ConfigError, match="max_connections: expected a number"):
        Config(max_connections=True).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("namespaces.chat", "history_size", -1),
        ("namespaces.chat", "history_size", 1_000_001),
        ("namespaces.chat", "history_ttl", 30 * 86400 + 1),
        ("default_namespace", "history_ttl", -1),
    ],
)
def test_namespace_history_is_bounded_by_the_same_table(tmp_path, table, key, value):
    path = tmp_path / "tidings.toml"
    path.write_text(f"[{table}]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=rf"^{table}\.{key} = {value} is out of range"):
        load_config(path, environ={})


@pytest.mark.parametrize("key", ["history_size", "history_ttl"])
def test_namespace_options_agree_with_the_table(key):
    # core/channels.py checks namespaces by itself (tidings.core doesn't import config).
    allowed, refused = edges(BOUNDS[key])
    for value in allowed:
        Namespaces.from_mapping({"namespaces": {"ns": {key: value}}})
    for value in refused:
        with pytest.raises(ConfigError, match=key):
            Namespaces.from_mapping({"namespaces": {"ns": {key: value}}})


def test_configuration_doc_lists_every_setting_with_its_range():
    rows = {}
    for line in CONFIGURATION_DOC.read_text().splitlines():
        match = re.match(r"\| `(\w+)` \|", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    tables = {"default_namespace", "namespaces", "templates"}
    assert {f.name for f in fields(Config)} - tables <= set(rows)
    for name, bound in BOUNDS.items():
        assert rows[name][2] == bound.describe(), name


# The demo page carries the publish API key: loopback only unless forced.


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("2001:db8::1", False),
        ("::ffff:192.0.2.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


def test_demo_on_a_public_address_is_refused_unless_forced():
    Config(demo=True).validate()
    Config(host="0.0.0.0").validate()
    with pytest.raises(ConfigError, match="--demo-public") as refused:
        load_config(environ={"TIDINGS_DEMO": "1", "TIDINGS_HOST": "0.0.0.0"})
    assert "'0.0.0.0'" in str(refused.value) and "API key" in str(refused.value)
    forced = load_config(
        environ={"TIDINGS_DEMO": "1", "TIDINGS_HOST": "0.0.0.0", "TIDINGS_DEMO_PUBLIC": "1"}
    )
    assert forced.demo and forced.demo_public
