"""Micro-benchmark of the client-protocol codecs: decoding commands, encoding replies and
publication pushes, in µs per operation (see docs/benchmarks.md, "Protobuf codec").

Run as ``python -m tidings.bench.codec [--codec protobuf|json] [--repeat N]``. Each figure
is the best of ``--repeat`` timings of a loop long enough to take about 0.2 s.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from tidings.protocol.centrifuge import protobuf
from tidings.protocol.centrifuge.codec import JSON, PROTOBUF, Codec

__all__ = [
    "INFO",
    "cases",
    "main",
    "measure",
]

INFO = {"user": "42", "client": "5b6e0c9c-3f7d-4a57-9d1e-1f0c3b2a4d5e", "conn_info": b'{"n":1}'}


def _pub(codec: Codec, offset: int) -> dict[str, Any]:
    data = codec.payload(b'{"text":"hello, world","n":12345,"ok":true}', True)
    return {"data": data, "offset": offset, "info": INFO}


def cases(codec: Codec) -> dict[str, Callable[[], object]]:
    """The operations measured, each a call without arguments."""
    payload = codec.payload(b'{"text":"hello"}', True)
    commands: dict[str, dict[str, Any]] = {
        "publish": {"id": 7, "publish": {"channel": "chat:room", "data": payload}},
        "subscribe": {
            "id": 2,
            "subscribe": {"channel": "chat:room", "recover": True, "offset": 41, "epoch": "xyz"},
        },
        "connect": {
            "id": 1,
            "connect": {
                "token": "eyJhbGciOiJIUzI1NiJ9." + "x" * 120,
                "name": "js",
                "version": "5.0.0",
                "subs": {f"chan{i}": {"recover": True, "offset": i} for i in range(3)},
            },
        },
    }
    push = {"channel": "chat:room", "pub": _pub(codec, 42)}
    replies: dict[str, dict[str, Any]] = {
        "push": {"push": push},
        "subscribe": {
            "id": 2,
            "subscribe": {
                "recoverable": True,
                "epoch": "xyz",
                "offset": 52,
                "recovered": True,
                "positioned": True,
                "publications": [_pub(codec, 42 + i) for i in range(10)],
            },
        },
        "publish": {"id": 7, "publish": {}},
    }
    out: dict[str, Callable[[], object]] = {}
    for name, command in commands.items():
        frame = codec.join([_encode_command(codec, command)])
        out[f"decode {name} command"] = partial(codec.decode_commands, frame)
    for name, reply in replies.items():
        out[f"encode {name} reply"] = partial(_reply, codec, reply)
    out["encode push (no Reply)"] = partial(codec.encode_push, push)
    return out


def _reply(codec: Codec, reply: dict[str, Any]) -> bytes:
    """What the server does with each reply: encode it and frame it."""
    return codec.join([codec.encode_reply(reply)])


def _encode_command(codec: Codec, command: dict[str, Any]) -> bytes:
    """A command as a client sends it (one request, whose ``bytes`` fields are raw)."""
    if codec.binary:
        return protobuf.encode_delimited("Command", command)
    ((key, request),) = ((k, v) for k, v in command.items() if k != "id")
    fields = {k: orjson.Fragment(v) if isinstance(v, bytes) else v for k, v in request.items()}
    return orjson.dumps({"id": command["id"], key: fields})


def measure(fn: Callable[[], object], repeat: int) -> float:
    """Best time of one call, in µs."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # enough calls for 0.2 s
    best = min(timer.repeat(repeat=repeat, number=number))
    return best / number * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tidings.bench.codec")
    parser.add_argument("--codec", choices=["protobuf", "json"], action="append")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    for name in args.codec or ["protobuf", "json"]:
        codec = PROTOBUF if name == "protobuf" else JSON
        for case, fn in cases(codec).items():
            print(f"{name:8} {case:28} {measure(fn, args.repeat):8.2f} µs")


if __name__ == "__main__":
    main()
