"""What every fuzz target asserts of a client-protocol decoder, whatever the input:

- it returns, or raises ``DecodeError``, and nothing else;
- it takes at most ``time_limit(len(data))`` seconds of CPU time: the thread's own, with
  the garbage collector paused (the machine's other load and a collection of the fuzzer's
  own heap don't count; tracemalloc's tracing does, and is most of it);
- it allocates at most ``MEMORY_FACTOR`` times the input plus ``MEMORY_SLACK`` (Python
  allocations, as ``tracemalloc`` sees them; upb's arenas are C memory, outside it, and
  bounded in the long runs by libFuzzer's ``-rss_limit_mb``);
- what it returns is well-formed: commands encode again in Protobuf and decode to the same
  dicts, and every payload of a JSON command is JSON that orjson encodes again.

The emulation targets decode as ``POST /emulation`` does: the request, then the commands
in its ``data``. Shared by the hypothesis tests (``test_fuzz_decoders.py``) and the atheris
targets (``atheris_decoders.py``).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from tidings.exceptions import DecodeError
from tidings.protocol.centrifuge import protobuf
from tidings.protocol.centrifuge.codec import JSON, PROTOBUF, Codec
from tidings.protocol.centrifuge.schema import SCALARS, SCHEMA


def time_limit(size: int) -> float:
    """Linear in the input: a hang, or work quadratic in the input, overruns it."""
    return 0.1 + 50e-6 * size


MEMORY_FACTOR = 100  # the worst found: an empty command (a 64-byte dict) per input byte
MEMORY_SLACK = 64 * 1024


def payloads(name: str, message: dict[str, Any]) -> Iterator[bytes]:
    """Every ``bytes`` value in ``message`` (of type ``name``), at any depth."""
    fields = SCHEMA[name].by_name
    for key, value in message.items():
        fld = fields[key]
        type_ = fld.map_value or fld.type
        values = value.values() if fld.map_value else value if fld.repeated else [value]
        for item in values:
            if type_ == "bytes":
                yield item
            elif type_ not in SCALARS:
                yield from payloads(type_, item)


def check_commands(commands: Any, binary: bool) -> None:
    assert isinstance(commands, list)
    for command in commands:
        assert isinstance(command, dict)
        raw = protobuf.encode("Command", command)
        if binary:
            assert protobuf.decode("Command", raw) == command
        else:
            for payload in payloads("Command", command):
                orjson.dumps(orjson.loads(payload))


def emulation(codec: Codec) -> Callable[[bytes], Any]:
    """What ``POST /emulation`` decodes: the request, then the commands it carries."""

    def decode(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        request = codec.decode_emulation(body)
        return request, codec.decode_commands(request.get("data", b""))

    return decode


def check_emulation(result: Any, binary: bool) -> None:
    request, commands = result
    assert isinstance(request, dict)
    assert set(request) <= {"node", "session", "data"}
    assert isinstance(request.get("data", b""), bytes)
    for key in ("node", "session"):
        assert isinstance(request.get(key, ""), str)
    if binary:
        raw = protobuf.encode("EmulationRequest", request)
        assert protobuf.decode("EmulationRequest", raw) == request
    check_commands(commands, binary)


TARGETS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any, bool], None], bool]] = {
    "json_commands": (JSON.decode_commands, check_commands, False),
    "protobuf_commands": (PROTOBUF.decode_commands, check_commands, True),
    "json_emulation": (emulation(JSON), check_emulation, False),
    "protobuf_emulation": (emulation(PROTOBUF), check_emulation, True),
}


def run(target: str, data: bytes) -> bool:
    """Decode ``data`` with ``target`` and assert all of the above; True when it decoded,
    False for a ``DecodeError``. Traces allocations for the call unless already tracing."""
    decode, check, binary = TARGETS[target]
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    gc.disable()  # decoding makes trees of dicts and lists: no cycles left to collect
    start = time.thread_time()
    try:
        result = decode(data)
    except DecodeError:
        result = None
    finally:
        elapsed = time.thread_time() - start
        gc.enable()
        allocated = tracemalloc.get_traced_memory()[1] - before
        if started:
            tracemalloc.stop()
    assert elapsed < time_limit(len(data)), f"{target}: {elapsed:.3f} s for {len(data)} bytes"
    assert allocated <= MEMORY_FACTOR * len(data) + MEMORY_SLACK, (
        f"{target}: {allocated} bytes allocated for {len(data)} bytes of input"
    )
    if result is None:
        return False
    check(result, binary)
    return True
