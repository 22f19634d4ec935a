import pytest

from tidings.config import load_config
from tidings.exceptions import ConfigError


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
