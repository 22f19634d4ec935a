"""Hypothesis fuzz targets for the client-protocol decoders (``fuzz_checks`` says what each
asserts). A short run by default, a few seconds each; ``TIDINGS_FUZZ_EXAMPLES=N`` runs N
examples per target instead, e.g. ``TIDINGS_FUZZ_EXAMPLES=100000 pytest tests/fuzz``.

Inputs are raw bytes, and frames built from the schema (valid commands, payloads nested
around the JSON depth limit, lengths and nesting at their limits) then cut, spliced and
overwritten.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest
from fuzz_checks import MEMORY_FACTOR, TARGETS, run
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tidings.protocol.centrifuge import protobuf
from tidings.protocol.centrifuge.schema import SCHEMA

EXAMPLES = int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the targets bound their own time, without hypothesis' warm-up noise
    suppress_health_check=list(HealthCheck),
    database=None,
)


# Values of the schema's types, payloads among them

_INTS = {
    "uint32": st.integers(0, 2**32 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
}


def nested(levels: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * levels + closer * levels


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_texts = (
    st.recursive(
        json_leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ).map(orjson.dumps)
    | st.integers(240, 1030).map(nested)  # around both of orjson's depth limits
    | st.integers(240, 1030).map(lambda n: nested(n, b'{"a":', b"}").replace(b":}", b":1}"))
    | st.integers().map(lambda n: str(n).encode())  # beyond 64 bits, orjson reads a float
)
payload_bytes = json_texts | st.binary(max_size=64)


def scalar(type_: str, binary: bool) -> st.SearchStrategy[Any]:
    if type_ in _INTS:
        return _INTS[type_]
    if type_ == "bool":
        return st.booleans()
    if type_ == "string":
        return st.text(max_size=16)
    return payload_bytes if binary else json_texts  # bytes


def message(name: str, binary: bool, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A message of type ``name``: any subset of its fields, nested at most a few levels
    (and once in a while far deeper: FilterNode is recursive)."""

    def value(type_: str) -> st.SearchStrategy[Any]:
        if type_ in SCHEMA:
            if depth >= 3:
                return st.just({})
            return st.deferred(lambda: message(type_, binary, depth + 1))
        return scalar(type_, binary)

    optional: dict[str, st.SearchStrategy[Any]] = {}
    for fld in SCHEMA[name].by_name.values():
        if fld.map_value is not None:
            optional[fld.name] = st.dictionaries(
                st.text(max_size=8), value(fld.map_value), max_size=3
            )
        elif fld.repeated:
            optional[fld.name] = st.lists(value(fld.type), max_size=3)
        else:
            optional[fld.name] = value(fld.type)
    return st.fixed_dictionaries({}, optional=optional)


def deep_filter(binary: bool) -> st.SearchStrategy[dict[str, Any]]:
    def tf(levels: int) -> dict[str, Any]:
        node: dict[str, Any] = {}
        for _ in range(levels):
            node = {"nodes": [node]}
        return {"id": 1, "subscribe": {"channel": "c", "tf": node}}

    return st.integers(25, 40).map(tf)


def commands(binary: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(message("Command", binary) | deep_filter(binary), min_size=1, max_size=3)


def json_line(command: dict[str, Any]) -> bytes:
    """A command as a JSON client writes it: payloads (bytes fields) inline as JSON."""

    def inline(name: str, value: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in value.items():
            fld = SCHEMA[name].by_name[key]
            type_ = fld.map_value or fld.type
            if type_ == "bytes":
                out[key] = orjson.Fragment(item)
            elif type_ in SCHEMA:
                if fld.map_value:
                    out[key] = {k: inline(type_, v) for k, v in item.items()}
                elif fld.repeated:
                    out[key] = [inline(type_, v) for v in item]
                else:
                    out[key] = inline(type_, item)
            else:
                out[key] = item
        return out

    return orjson.dumps(inline("Command", command))


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[bytes]) -> bytes:
    """A frame, then a few cuts, splices and overwrites at random places."""
    data = bytearray(draw(frames))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["cut", "insert", "overwrite", "truncate"]))
        noise = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(LIES))
        if action == "cut":
            del data[pos : pos + len(noise)]
        elif action == "insert":
            data[pos:pos] = noise
        elif action == "overwrite":
            data[pos : pos + len(noise)] = noise
        else:
            del data[pos:]
    return bytes(data)


# Varints that claim far more than any frame holds, and other edges of the wire format.
LIES = [b"\x80\xa3\xc3\x47", b"\xff" * 9 + b"\x01", b"\xff" * 11, b"\x00", b"\x0f", b"\x0b"]

protobuf_frames = commands(True).map(
    lambda cs: b"".join(protobuf.encode_delimited("Command", c) for c in cs)
)
json_frames = commands(False).map(lambda cs: b"\n".join(json_line(c) for c in cs))


def emulation_body(binary: bool, frame: bytes, node: str, session: str) -> bytes:
    if binary:
        request = {"node": node, "session": session, "data": frame}
        return protobuf.encode("EmulationRequest", request)
    return orjson.dumps(
        {"node": node, "session": session, "data": frame.decode("utf-8", "replace")}
    )


@FUZZ
@given(mutated(protobuf_frames) | st.binary(max_size=512))
def test_protobuf_commands(data: bytes) -> None:
    event("decoded" if run("protobuf_commands", data) else "DecodeError")


@FUZZ
@given(mutated(json_frames) | st.binary(max_size=512))
def test_json_commands(data: bytes) -> None:
    event("decoded" if run("json_commands", data) else "DecodeError")


@FUZZ
@given(mutated(st.builds(emulation_body, st.just(True), protobuf_frames, st.text(), st.text())))
def test_protobuf_emulation(data: bytes) -> None:
    event("decoded" if run("protobuf_emulation", data) else "DecodeError")


@FUZZ
@given(mutated(st.builds(emulation_body, st.just(False), json_frames, st.text(), st.text())))
def test_json_emulation(data: bytes) -> None:
    event("decoded" if run("json_emulation", data) else "DecodeError")


def test_the_checks_can_fail() -> None:
    # The allocation bound is real: a decoder that kept 1,000 times the bound is caught.
    decode, check, binary = TARGETS["json_commands"]
    TARGETS["json_commands"] = (lambda d: [b"x" * (MEMORY_FACTOR * 1000 * len(d))], check, binary)
    try:
        with pytest.raises(AssertionError, match="allocated"):
            run("json_commands", b"{}")
    finally:
        TARGETS["json_commands"] = (decode, check, binary)
    assert run("protobuf_commands", protobuf.encode_delimited("Command", {"id": 1, "ping": {}}))
    assert not run("protobuf_commands", b"\x80")
