import orjson
import pytest

from tidings.protocol.envelope import encode_envelope, encode_notice, payload_json
from tidings.protocol.http import chunk, response_head, simple_response
from tidings.protocol.sse import sse_comment, sse_event, sse_id, sse_retry
from tidings.protocol.template import MessageTemplate


def test_envelope_embeds_json_payload_as_json():
    raw = encode_envelope("news", 3, "ep", None, b'{"a": [1, 2]}', True)
    assert orjson.loads(raw) == {
        "channel": "news",
        "offset": 3,
        "epoch": "ep",
        "data": {"a": [1, 2]},
    }
    assert b"event" not in raw


def test_envelope_turns_text_into_a_json_string_and_keeps_event():
    body = orjson.loads(encode_envelope("c", 1, "e", "alert", 'héllo\n"x"'.encode(), False))
    assert body["data"] == 'héllo\n"x"'
    assert body["event"] == "alert"


def test_payload_json():
    assert payload_json(b"[1]", True) == b"[1]"
    assert payload_json(b"a b", False) == b'"a b"'


def test_notice():
    assert orjson.loads(encode_notice("gap", "news", reason="history")) == {
        "notice": "gap",
        "channel": "news",
        "reason": "history",
    }


def test_sse_event_splits_every_kind_of_line_break():
    out = sse_event(b"one\ntwo\r\nthree\rfour", event="e", id="news:1:x")
    assert out == (b"id: news:1:x\nevent: e\ndata: one\ndata: two\ndata: three\ndata: four\n\n")


def test_sse_event_without_id_or_event():
    assert sse_event(b"{}") == b"data: {}\n\n"


def test_sse_event_name_cannot_inject_fields():
    out = sse_event(b"x", event="a\nid: 9")
    assert out.count(b"\n") == 3
    assert b"\nid:" not in out


def test_sse_comment_and_retry():
    assert sse_comment("ok") == b":ok\n\n"
    assert sse_retry(1500) == b"retry: 1500\n\n"


def test_template_renders_every_placeholder():
    t = MessageTemplate(
        "js", "<script>p(~text~,'~channel~','~id~','~event~',~offset~,'~epoch~')</script>"
    )
    out = t.render(text=b'{"a":1}', channel="news", id="news:2:e", event="ev", offset=2, epoch="e")
    assert out == b"<script>p({\"a\":1},'news','news:2:e','ev',2,'e')</script>"


def test_template_without_placeholders_and_unknown_tildes():
    t = MessageTemplate("plain", "~nope~ fixed")
    out = t.render(text=b"x", channel="c", id="", event=None, offset=0, epoch="")
    assert out == b"~nope~ fixed"


def test_chunk_framing():
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert chunk(b"") == b"0\r\n\r\n"


def test_simple_response():
    raw = simple_response(404, b'{"error":"not found"}', keep_alive=False)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 404 Not Found"
    assert b"Content-Length: 21" in lines
    assert b"Connection: close" in lines
    assert body == b'{"error":"not found"}'


@pytest.mark.parametrize("status", [101, 200, 431, 599])
def test_response_head_status_line(status):
    assert response_head(status, []).startswith(f"HTTP/1.1 {status} ".encode())


# WHATWG HTML §9.2.5: a field ends at CR or LF, so none may reach a field's value.


@pytest.mark.parametrize("bad", ["\n", "\r", "\r\n", "\x00"])
def test_sse_id_with_cr_lf_or_nul_is_left_out(bad):
    out = sse_event(b"x", id=f"a:1:e{bad}event: evil{bad}data: injected")
    assert out == b"data: x\n\n"
    assert sse_id(f"a:1:{bad}") == b""


def test_sse_id_line():
    assert sse_id("a:1:k3x9,b:2:k3x9") == b"id: a:1:k3x9,b:2:k3x9\n"


@pytest.mark.parametrize("bad", ["\n", "\r", "\x00"])
def test_sse_event_name_is_one_field(bad):
    out = sse_event(b"x", event=f"a{bad}data: injected")
    assert out == b"event: a data: injected\ndata: x\n\n"


@pytest.mark.parametrize("bad", ["\r\n", "\n", "\r", "\x00"])
@pytest.mark.parametrize("where", ["name", "value"])
def test_response_head_refuses_cr_lf_nul_in_headers(bad, where):
    header = ("X-A" + bad + "Set-Cookie", "1") if where == "name" else ("ETag", f'"a{bad}X: 1"')
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        response_head(200, [header])
    with pytest.raises(ValueError):
        simple_response(200, b"", headers=[header])
