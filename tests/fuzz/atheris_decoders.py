"""Atheris (libFuzzer) targets for the client-protocol decoders, for long runs.

    python tests/fuzz/atheris_decoders.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of ``json_commands``, ``protobuf_commands``, ``json_emulation``,
``protobuf_emulation``; each input is checked as ``fuzz_checks.run`` says (tracemalloc
traces the whole run). Without a corpus directory a temporary one is made; valid frames of
the target's kind are written to the first one as seeds, and a dictionary of the schema's
field names and JSON tokens is passed unless ``-dict`` is given. For example (needs
``pip install atheris``; libFuzzer prints ``Done N runs in T second(s)`` at the end):

    PYTHONPATH=src python tests/fuzz/atheris_decoders.py protobuf_commands \\
        -runs=250000 -max_total_time=900 -timeout=5 -rss_limit_mb=1024 -max_len=8192
"""

from __future__ import annotations

import sys
import tempfile
import tracemalloc
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["tidings"]):
    from tidings.protocol import envelope  # noqa: F401
    from tidings.protocol.centrifuge import codec, protobuf  # noqa: F401 (instrumented)
    from tidings.protocol.centrifuge.schema import SCHEMA

from fuzz_checks import TARGETS, run

COMMANDS = [
    {"id": 1, "connect": {"token": "t", "data": b'{"a":[1,{"b":null}]}', "name": "js"}},
    {"id": 2, "connect": {"subs": {"c": {"recover": True, "offset": 3, "epoch": "e"}}}},
    {"id": 3, "subscribe": {"channel": "c", "recover": True, "offset": 2**40, "flag": 2}},
    {"id": 4, "subscribe": {"channel": "c", "tf": {"op": "and", "nodes": [{"key": "k"}]}}},
    {"id": 5, "publish": {"channel": "c", "data": b"[" * 254 + b"]" * 254}},
    {"id": 6, "rpc": {"method": "m", "data": b'"x"'}},
    {"id": 7, "history": {"channel": "c", "limit": -1, "since": {"offset": 1}}},
    {"id": 8, "presence": {"channel": "c"}, "ping": {}},
    {"id": 9, "connect": {"headers": {"X-A": "1"}, "version": "1"}, "send": {"data": b"{}"}},
]


def _json_line(command: dict[str, object]) -> bytes:
    import orjson

    def inline(value: object) -> object:
        if isinstance(value, bytes):
            return orjson.Fragment(value)
        if isinstance(value, dict):
            return {k: inline(v) for k, v in value.items()}
        if isinstance(value, list):
            return [inline(v) for v in value]
        return value

    return orjson.dumps(inline(command))


def seeds(target: str) -> list[bytes]:
    import orjson

    binary = target.startswith("protobuf")
    if binary:
        frames = [protobuf.encode_delimited("Command", c) for c in COMMANDS]
    else:
        frames = [_json_line(c) for c in COMMANDS]
    frames.append((b"" if binary else b"\n").join(frames))
    if target.endswith("emulation"):
        if binary:
            return [
                protobuf.encode("EmulationRequest", {"session": "s", "data": f}) for f in frames
            ]
        return [orjson.dumps({"node": "n", "session": "s", "data": f.decode()}) for f in frames]
    return frames


def dictionary() -> str:
    words = {name for msg in SCHEMA.values() for name in msg.by_name}
    words |= {"node", "session"}
    tokens = [f'"\\"{w}\\""' for w in sorted(words)]
    tokens += ['"{"', '"}"', '"["', '"]"', '":"', '","', '"true"', '"null"', '"\\\\u0000"']
    return "".join(f"w{i}={t}\n" for i, t in enumerate(tokens))


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [corpus]")
    target = sys.argv[1]
    args = [sys.argv[0], *sys.argv[2:]]
    work = Path(tempfile.mkdtemp(prefix=f"tidings-fuzz-{target}-"))
    corpora = [a for a in args[1:] if not a.startswith("-")]
    if not corpora:
        corpora = [str(work / "corpus")]
        args.append(corpora[0])
    corpus = Path(corpora[0])
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds(target)):
        (corpus / f"seed-{i}").write_bytes(seed)
    if not any(a.startswith("-dict=") for a in args):
        (work / "tokens.dict").write_text(dictionary())
        args.append(f"-dict={work / 'tokens.dict'}")

    def one_input(data: bytes) -> None:
        run(target, data)

    tracemalloc.start()
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
