"""Stream templates: script mode for HTML/JavaScript content types, raw mode for the others."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tidings.config import load_config
from tidings.exceptions import ConfigError
from tidings.protocol.template import MessageTemplate

ROOT = Path(__file__).resolve().parents[2]
XSS = "</script><script>alert(1)</script>"


def readme_template(tmp_path: Path) -> MessageTemplate:
    """The ``[templates.jsonp]`` example of the README, loaded as the server loads it."""
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if "[templates.jsonp]" in b]
    path = tmp_path / "tidings.toml"
    path.write_text(block)
    return load_config(path, environ={}).message_templates()["jsonp"]


def render(t: MessageTemplate, text: bytes, is_json: bool = False, **kw: object) -> bytes:
    values: dict[str, object] = {
        "channel": "news",
        "id": "news:7:k3x9",
        "event": None,
        "offset": 7,
        "epoch": "k3x9",
    }
    values.update(kw)
    return t.render(text=text, is_json=is_json, **values)  # type: ignore[arg-type]


CASES = [
    # (payload bytes, is_json, the value onMessage must receive)
    (XSS.encode(), False, XSS),
    (b"plain text", False, "plain text"),
    (b'it\'s "quoted" \\ & <b>', False, 'it\'s "quoted" \\ & <b>'),
    ("line\u2028sep\u2029end".encode(), False, "line\u2028sep\u2029end"),
    (b'{"html":"</script><!--<script>","n":[1,2.5,null]}', True, None),
    (b"42", True, 42),
    (b"\xff\xfe", False, {"base64": "//4="}),
    (b"not json {", True, "not json {"),  # marked JSON but isn't: a string, never code
]


def test_documented_template_renders_one_script_element(tmp_path):
    t = readme_template(tmp_path)
    assert t.script
    for data, is_json, _ in CASES:
        out = render(t, data, is_json)
        assert out.startswith(b"<script>parent.onMessage(")
        assert out.endswith(b");</script>\n")
        # Only the template's own end tag can end the element (HTML §13.2.5.4).
        assert out.lower().count(b"</script") == 1
        assert out.count(b"<") == 2
        assert b"\xe2\x80\xa8" not in out and b"\xe2\x80\xa9" not in out


NODE_DRIVER = r"""
const outputs = JSON.parse(process.argv[1]);
const results = outputs.map((html) => {
  const m = /^<script>([^<]*)<\/script>\n$/.exec(html);
  if (!m) return "not one script element";
  const calls = [];
  const parent = { onMessage: (...args) => calls.push(args) };
  new Function("parent", m[1])(parent);
  return calls;
});
console.log(JSON.stringify(results));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
def test_documented_template_is_the_intended_js_call(tmp_path):
    """Run each rendered message in Node: exactly one call, with the payload and the id."""
    t = readme_template(tmp_path)
    outputs = [render(t, data, is_json).decode() for data, is_json, _ in CASES]
    proc = subprocess.run(
        ["node", "-e", NODE_DRIVER, json.dumps(outputs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results = json.loads(proc.stdout)
    for (data, _, expected), calls in zip(CASES, results, strict=True):
        value = json.loads(data) if expected is None else expected
        assert calls == [[value, "news:7:k3x9"]], data


def test_every_placeholder_is_a_js_literal_in_script_mode():
    t = MessageTemplate(
        "js",
        "f(~text~,~channel~,~id~,~event~,~offset~,~epoch~)",
        content_type="application/javascript",
    )
    out = render(t, b"a<b>&c", event="tidings.gap")
    assert out == (b'f("a\\u003cb\\u003e\\u0026c","news","news:7:k3x9","tidings.gap",7,"k3x9")')
    assert render(t, b"x").endswith(b',"",7,"k3x9")')  # no event: an empty string


@pytest.mark.parametrize(
    "ctype",
    ["text/html", "TEXT/HTML; charset=utf-8", "text/javascript", "application/xhtml+xml"],
)
def test_script_mode_by_content_type(ctype):
    assert MessageTemplate("t", "~text~", content_type=ctype).script


@pytest.mark.parametrize("ctype", ["text/plain; charset=utf-8", "application/x-ndjson"])
def test_other_types_insert_values_as_they_are(ctype):
    t = MessageTemplate("t", "[~channel~ ~id~ ~event~] ~text~\n", content_type=ctype)
    assert not t.script
    assert render(t, b"<b>", event="ev") == b"[news news:7:k3x9 ev] <b>\n"


@pytest.mark.parametrize(
    "template", ["f('~id~')", 'f("~text~")', "f(`~channel~`)", "f('x', '~epoch~ ')", "~text~'"]
)
def test_quoted_placeholder_in_script_mode_is_refused(template):
    with pytest.raises(ConfigError, match="without quotes"):
        MessageTemplate("t", template, content_type="text/html")


def test_quoted_placeholder_is_fine_in_raw_mode():
    t = MessageTemplate("t", "'~id~'")
    assert render(t, b"") == b"'news:7:k3x9'"
