import re
from pathlib import Path

import pytest

from tidings.config import (
    ENVIRONMENT_NOT_KEYS,
    KEYS,
    Config,
    genconfig,
    is_loopback_host,
    load_config,
)
from tidings.config_schema import Key
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
        ("nope = 1\n", "unknown key 'nope'"),
        ('port = "x"\n', "integer"),
        ("port = 70000\n", "port"),
        ("stats_open = 1\n", "true or false"),
        ("[templates.t]\ntemplate = 'x'\nfooter = 1\n", "templates.t.footer = 1"),
        ("[templates.t]\ntemplate = 'x'\nheadr = ''\n", "did you mean 'header'"),
        ("templates = 1\n", "templates .*expected a table"),
        ("[namespaces.chat]\npresense = true\n", "namespaces.chat.presense.*'presence'"),
        ("[namespaces.chat]\npresence = 'yes'\n", "namespaces.chat.presence = 'yes'"),
        ("[default_namespace]\nallowed_delta_types = ['x']\n", "allowed_delta_types"),
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


# The schema: every number has a range, checked where the value comes from and again by
# Config.validate at start-up.

NUMERIC = sorted(name for name, key in KEYS.items() if key.base in (int, float))


def test_every_numeric_setting_has_bounds():
    assert NUMERIC
    for name in NUMERIC:
        assert KEYS[name].low is not None and KEYS[name].high is not None, name


def test_the_defaults_are_allowed():
    for name, key in KEYS.items():
        assert key.check(getattr(Config(), name), "") == key.default, name


def edges(key: Key) -> tuple[list[float], list[float]]:
    """Values at the edges of ``key``'s range that it allows, and those just past them."""
    assert key.low is not None and key.high is not None
    step = 0.001 if key.above else 1
    allowed = [key.low + step if key.above else key.low, key.high]
    return allowed, [key.low if key.above else key.low - 1, key.high + step]


@pytest.mark.parametrize("name", NUMERIC)
def test_each_bound_admits_its_edges_and_no_further(name):
    key = KEYS[name]
    allowed, refused = edges(key)
    kind = key.base
    # Several workers need a shared broker (never connected to here).
    other = {"broker": "redis://127.0.0.1:1"} if name == "workers" else {}
    for value in allowed:
        Config(**{name: kind(value)}, **other).validate()
    for value in refused:
        with pytest.raises(ConfigError, match=f"^{name} = .*: out of range: allowed"):
            Config(**{name: kind(value)}, **other).validate()


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
        (
            "ping_interval = 0",
            r"ping_interval = 0 \(.*\): out of range: allowed 1 to 3,600 seconds",
        ),
        ("ping_interval = 3601", "ping_interval = 3601 .* out of range"),
        ("request_timeout = 86400", None),
        ("request_timeout = 0", "allowed more than 0 up to 86,400 seconds"),
        # a size
        ("max_body_bytes = 1024", None),
        (
            "max_body_bytes = 1023",
            "max_body_bytes = 1023 .*: out of range: allowed 1,024 to 67,108,864 bytes",
        ),
        ("max_outgoing_bytes = 268435457", "max_outgoing_bytes = 268435457 .* out of range"),
        # a count
        ("max_connections = 1000000", None),
        ("max_connections = 1000001", "allowed 1 to 1,000,000$"),
        ("client_max_channels = 0", "client_max_channels = 0 .* out of range"),
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
    with pytest.raises(
        ConfigError, match=r"^ping_interval = .* \(TIDINGS_PING_INTERVAL\): out of range"
    ):
        load_config(environ={"TIDINGS_PING_INTERVAL": text})


def test_a_bool_is_not_a_number():
    with pytest.raises(ConfigError, match="max_connections = True: expected an integer"):
        Config(max_connections=True).validate()


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
    with pytest.raises(ConfigError, match=rf"^{table}\.{key} = {value} \(.*\): out of range"):
        load_config(path, environ={})


@pytest.mark.parametrize("key", ["history_size", "history_ttl"])
def test_namespace_options_agree_with_the_table(key):
    # core/channels.py checks namespaces by itself (tidings.core doesn't import config).
    allowed, refused = edges(KEYS[key])
    kind = KEYS[key].base
    for value in allowed:
        Namespaces.from_mapping({"namespaces": {"ns": {key: kind(value)}}})
    for value in refused:
        with pytest.raises(ConfigError, match=key):
            Namespaces.from_mapping({"namespaces": {"ns": {key: kind(value)}}})


def shown_default(key: Key) -> str:
    """A default as docs/configuration.md's table shows it."""
    if key.help.shown_default is not None:
        return key.help.shown_default
    value = key.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"
    if value == "":
        return '`""`'
    return f"`{value}`" if isinstance(value, str) else f"`{value!r}`"


def doc_rows() -> dict[str, list[str]]:
    rows = {}
    for line in CONFIGURATION_DOC.read_text().splitlines():
        match = re.match(r"\| `\[?([\w.<>]+?)(?:\.<name>)?\]?` \|", line)
        if match:
            assert match.group(1) not in rows, f"two rows for {match.group(1)}"
            rows[match.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    return rows


def test_configuration_doc_has_a_row_for_every_key_and_no_other():
    assert set(doc_rows()) == set(KEYS)


@pytest.mark.parametrize("name", sorted(KEYS))
def test_configuration_doc_shows_the_schemas_default_and_range(name):
    # A failure here means docs/configuration.md and the schema (tidings/config.py) differ:
    # set the row's default and allowed cells to what this test expects.
    if name in ("default_namespace", "namespaces", "templates"):
        return
    key = KEYS[name]
    _, default, allowed, meaning = doc_rows()[name]
    assert (default, allowed) == (shown_default(key), key.describe())
    assert meaning


# Strictness: what the file, the environment or a flag says is checked against the schema.


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('port = "8312"', "port = '8312' (PATH): expected an integer, got a string"),
        ('demo = "yes"', "demo = 'yes' (PATH): expected true or false, got a string"),
        ("ping_interval = 0", "ping_interval = 0 (PATH): out of range: allowed 1 to 3,600 seconds"),
        (
            'log_level = "verbose"',
            "log_level = 'verbose' (PATH): expected one of 'debug', 'info', 'warning', 'error', "
            "got a string",
        ),
        ("allowed_origins = [1]", "allowed_origins = [1] (PATH): expected a list of strings"),
        ("prot = 80", "PATH: unknown key 'prot' (did you mean 'port'?)"),
    ],
)
def test_the_issues_examples_are_refused_with_one_precise_line(tmp_path, text, message):
    path = tmp_path / "tidings.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert str(refused.value).startswith(message.replace("PATH", str(path)))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("var", "text", "value"),
    [
        ("TIDINGS_DEMO", "yes", True),
        ("TIDINGS_DEMO", "No", False),
        ("TIDINGS_DEMO", "1", True),
        ("TIDINGS_DEMO", "false", False),
        ("TIDINGS_PORT", " 9000 ", 9000),
        ("TIDINGS_PING_INTERVAL", "2.5", 2.5),
        ("TIDINGS_ALLOWED_ORIGINS", '["https://a", "https://b"]', ["https://a", "https://b"]),
        ("TIDINGS_ALLOWED_ORIGINS", "https://a,https://b", ["https://a", "https://b"]),
        ("TIDINGS_HOOKS", "a.b, c", ["a.b", "c"]),
        ("TIDINGS_LOG_LEVEL", "debug", "debug"),
    ],
)
def test_environment_text_is_parsed_per_the_keys_type(var, text, value):
    name = var.removeprefix("TIDINGS_").lower()
    assert getattr(load_config(environ={var: text}), name) == value


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIDINGS_PORT": "8o"}, r"port = '8o' \(TIDINGS_PORT\): expected an integer"),
        ({"TIDINGS_LOG_LEVEL": "verbose"}, r"log_level = 'verbose' \(TIDINGS_LOG_LEVEL\)"),
        ({"TIDINGS_ALLOWED_ORIGINS": "[1"}, "expected a list of strings"),
        (
            {"TIDINGS_APIKEY": "x"},
            r"unknown environment variable TIDINGS_APIKEY \(did you mean 'TIDINGS_API_KEY'\?\)",
        ),
        ({"TIDINGS_NAMESPACES": "{}"}, "file only"),
    ],
)
def test_bad_environment_is_refused_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ=env)


def test_variables_read_elsewhere_are_not_keys():
    config = load_config(environ={var: "x" for var in ENVIRONMENT_NOT_KEYS})
    assert config == Config()
    # Each is read somewhere in the project (so the list holds no stale name).
    root = CONFIGURATION_DOC.parents[1]
    sources = "".join(
        p.read_text() for p in [*root.glob("src/**/*.py"), *root.glob("tests/**/*.py")]
    )
    for var in ENVIRONMENT_NOT_KEYS:
        assert sources.count(var) > 1, var


def test_a_flag_is_named_as_the_source():
    with pytest.raises(ConfigError, match=r"^log_level = 'verbose' \(--log-level\)"):
        load_config(environ={}, overrides={"log_level": "verbose"})
    with pytest.raises(ConfigError, match=r"^port = 70000 \(--port\): out of range"):
        load_config(environ={}, overrides={"port": 70000})


def test_genconfig_has_every_key_and_loads_back_as_the_defaults(tmp_path):
    text = genconfig()
    for name, key in KEYS.items():
        assert re.search(rf"^(\[{name}\]|{name} = )", text, re.M), name
        assert key.help.text in text, name
    path = tmp_path / "tidings.toml"
    path.write_text(text)
    assert load_config(path, environ={}) == Config()


def test_genconfig_shows_the_range_and_unit():
    comment = "# WebSocket pings, SSE heartbeats, client protocol pings"
    assert f"{comment}; allowed 1 to 3,600 seconds\nping_interval = 25.0\n" in genconfig()


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


def test_a_key_without_help_is_refused_at_import():
    from dataclasses import dataclass

    from tidings.config_schema import keys_of

    @dataclass
    class Partial:
        port: int = 1

    with pytest.raises(TypeError, match=r"Partial\.port has no Help"):
        keys_of(Partial)
