"""Fuzz target: ``RequestParser`` (RFC 9112) on hostile input.

Each case is a byte string and the points where it is cut into ``feed`` calls. The oracle:

- ``feed`` never raises; a refusal is ``parser.error``, an ``HttpError`` of 400, 413 or 431;
- the result doesn't depend on how the bytes were cut (one ``feed`` or many), except that
  a head over the size limit may get 431 where it would otherwise get 400 or not be over;
- what is accepted keeps the limits (header bytes, body size) and carries no CR, LF or NUL
  in a header (those are written back into responses);
- a case takes bounded time, and its peak memory (tracemalloc) is linear in its size.

Inputs come from structured generators (valid requests with mutated headers, chunked bodies
with bad sizes, huge Content-Length, pipelined sequences, Upgrade requests followed by
other bytes) and from plain random bytes. The generators draw from a ``Source``: Hypothesis
in the test suite (``TIDINGS_FUZZ_EXAMPLES`` examples per test, 300 by default), atheris
(coverage-guided) or ``random`` for long runs::

    python tests/fuzz/test_fuzz_http.py --seconds 600          # atheris if installed
    python tests/fuzz/test_fuzz_http.py --seconds 60 --engine random
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import random
import sys
import time
import tracemalloc
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.exceptions import HttpError
from tidings.protocol.http import Request, RequestParser

T = TypeVar("T")

EXAMPLES = int(os.environ.get("TIDINGS_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # timing is part of the oracle, with its own bound
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Per case: a generous bound against hangs and super-linear work (with tracemalloc on).
TIME_BASE, TIME_PER_BYTE = 1.0, 20e-6
# Peak memory over the case: parsed requests are Python objects, some tens of bytes per
# input byte for tiny pipelined requests or long query strings; never more than this.
MEMORY_BASE, MEMORY_PER_BYTE = 256 * 1024, 64

STATUSES = {400, 413, 431}


# Sources of choices: Hypothesis (shrinks), atheris (coverage-guided), random (plain).


class Source:
    """Where a generator's choices come from."""

    def int(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def bytes(self, max_size: int) -> bytes:
        raise NotImplementedError

    def bool(self, p_true: float = 0.5) -> bool:
        return self.int(0, 999) < p_true * 1000

    def choice(self, options: Sequence[T]) -> T:
        return options[self.int(0, len(options) - 1)]


class HypothesisSource(Source):
    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def bytes(self, max_size: int) -> bytes:
        return self.data.draw(st.binary(max_size=max_size))


class RandomSource(Source):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def bytes(self, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_size))


class FdpSource(Source):
    """atheris' FuzzedDataProvider; once the input is used up every choice is the lowest."""

    def __init__(self, fdp: Any) -> None:
        self.fdp = fdp

    def int(self, lo: int, hi: int) -> int:
        return int(self.fdp.ConsumeIntInRange(lo, hi))

    def bytes(self, max_size: int) -> bytes:
        return bytes(self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, max_size)))


# Shared by the fuzz targets: cutting, mutating, measuring, running long.

SPECIAL = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b",", b";", b"\r\n ", b"\xff", b"%"]


def cuts(src: Source, size: int) -> list[int]:
    """Where to cut ``size`` bytes into pieces: none, a few, or one piece per byte."""
    kind = src.int(0, 3)
    if kind == 0 or size == 0:
        return []
    if kind == 3 and size <= 2048:
        return list(range(1, size))
    return sorted({src.int(0, size) for _ in range(src.int(1, 6))})


def pieces(data: bytes, at: list[int]) -> list[bytes]:
    bounds = [0, *at, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def mutate(src: Source, data: bytes, max_ops: int = 3) -> bytes:
    """Up to ``max_ops`` edits: insert special or random bytes, delete, duplicate, flip."""
    buf = bytearray(data)
    for _ in range(src.int(0, max_ops)):
        at = src.int(0, len(buf))
        op = src.int(0, 5)
        if op == 0:
            buf[at:at] = src.choice(SPECIAL)
        elif op == 1:
            buf[at:at] = src.bytes(8)
        elif op == 2:
            del buf[at : at + src.int(1, 8)]
        elif op == 3:
            buf[at:at] = buf[max(0, at - src.int(1, 32)) : at]
        elif op == 4 and at < len(buf):
            buf[at] ^= 1 << src.int(0, 7)
        else:
            del buf[at:]
    return bytes(buf)


def measured(fn: Callable[[], T]) -> tuple[T, float, int]:
    """``fn()``, its duration and the peak of memory it allocated (tracemalloc)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] - before
        if started:
            tracemalloc.stop()
    return result, elapsed, peak


def check_bounds(size: int, elapsed: float, peak: int, what: str) -> None:
    assert elapsed <= TIME_BASE + TIME_PER_BYTE * size, f"{what}: {elapsed:.3f} s for {size} B"
    assert peak <= MEMORY_BASE + MEMORY_PER_BYTE * size, f"{what}: peak {peak} B for {size} B"


def instrument(atheris: Any, prefixes: tuple[str, ...]) -> None:
    """atheris' coverage for the code under test only (``instrument_all`` takes minutes)."""
    seen: set[int] = set()

    def patch(obj: Any) -> None:
        func = getattr(obj, "__func__", obj)
        if isinstance(func, types.FunctionType) and id(func) not in seen:
            seen.add(id(func))
            atheris.instrument_func(func)

    for name, module in list(sys.modules.items()):
        if not name.startswith(prefixes):
            continue
        for obj in list(vars(module).values()):
            if getattr(obj, "__module__", None) != name:
                continue
            if isinstance(obj, type):
                for attr in vars(obj).values():
                    patch(attr.fget if isinstance(attr, property) else attr)
            else:
                patch(obj)


def run_long(name: str, one_input: Callable[[Source], None], argv: list[str]) -> None:
    """The long run of a target: ``--seconds`` of atheris (if installed) or random cases."""
    parser = argparse.ArgumentParser(prog=name)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    parser.add_argument("--seed", type=int, default=0, help="random engine: first seed")
    parser.add_argument("--case", type=int, help="random engine: run the case of this seed")
    args, rest = parser.parse_known_args(argv[1:])
    if args.case is not None:
        one_input(RandomSource(random.Random(args.case)))
        print(f"{name}: case {args.case} passed")
        return
    engine = args.engine
    if engine == "auto":
        try:
            import atheris
        except ImportError:
            engine = "random"
        else:
            engine = "atheris"
    tracemalloc.start()
    if engine == "atheris":
        import atheris

        def test_one_input(data: bytes) -> None:
            one_input(FdpSource(atheris.FuzzedDataProvider(data)))

        instrument(atheris, ("tidings.protocol", "websockets", "httptools"))
        flags = [f"-max_total_time={args.seconds}", "-timeout=10", "-print_final_stats=1"]
        flags += ["-max_len=4096", "-len_control=10"]  # structured cases need bytes
        atheris.Setup([argv[0], *flags, *rest], test_one_input)
        atheris.Fuzz()
        return
    start = time.monotonic()
    count = 0
    while time.monotonic() - start < args.seconds:
        seed = args.seed + count
        try:
            one_input(RandomSource(random.Random(seed)))
        except BaseException:
            print(f"{name}: case {count} failed; reproduce with --case {seed}", flush=True)
            raise
        count += 1
    elapsed = time.monotonic() - start
    print(f"{name}: {count} cases in {elapsed:.0f} s, 0 failures", flush=True)


# HTTP requests

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT"]
ODD_METHODS = [b"TRACE", b"PRI", b"get", b"G\xc3\xa9T", b"", b"GET GET", b"M-SEARCH"]
SEGMENTS = [b"ws", b"sse", b"stream", b"lp", b"pub", b"health", b"news", b"a,b", b"chat:1"]
ODD_SEGMENTS = [b"%ff", b"%2F", b"%00", b"%0d%0a", b"..", b"%", b"%g0", b"\xc3\xa9", b"~"]
QUERIES = [
    b"last_event_id=news:1:k3x9",
    b"since=0",
    b"format=raw",
    b"template=js",
    b"a=%ff",
    b"=",
    b"&&",
    b"a=b=c",
    b"last_event_id=a:1:x%0D%0Aid",
]
TARGETS = [b"*", b"http://h:1/x?y", b"h:80", b"//a", b"/?", b"/#f"]
VERSIONS = [b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1"]
EOLS = [b"\r\n"] * 12 + [b"\n", b"\r", b"\r\r\n", b"\n\r"]
LENGTHS = [
    b"0",
    b"5",
    b"65536",
    b"65537",
    b"99999999999999999999999",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-1",
    b"+5",
    b"5, 5",
    b"5,6",
    b"0x10",
    b" 5 ",
    b"1e3",
    b"",
    b"\xd9\xa3",  # ARABIC-INDIC DIGIT THREE
    b"0" * 40 + b"1",
]
CODINGS = [b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity", b"Chunked", b"chunked\x0b"]
NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Upgrade",
    b"Expect",
    b"Last-Event-ID",
    b"If-None-Match",
    b"Origin",
    b"Sec-WebSocket-Key",
    b"Sec-WebSocket-Version",
    b"Content-Type",
    b"X-A",
]
ODD_NAMES = [b"", b"Bad Name", b"X\x00", b"X:", b" Host", b"Host ", b"\xff", b"X" * 300]
VALUES: dict[bytes, list[bytes]] = {
    b"Content-Length": LENGTHS,
    b"Transfer-Encoding": CODINGS,
    b"Connection": [b"close", b"keep-alive", b"Upgrade", b"upgrade, keep-alive", b"close, x"],
    b"Upgrade": [b"websocket", b"h2c", b"WebSocket", b""],
    b"Expect": [b"100-continue", b"100-Continue", b"200-ok"],
    b"Sec-WebSocket-Version": [b"13", b"8", b""],
}


def target(src: Source) -> bytes:
    if src.bool(0.1):
        return src.choice(TARGETS)
    parts = [
        src.choice(ODD_SEGMENTS) if src.bool(0.15) else src.choice(SEGMENTS)
        for _ in range(src.int(0, 3))
    ]
    path = b"/" + b"/".join(parts)
    if src.bool(0.5):
        path += b"?" + b"&".join(src.choice(QUERIES) for _ in range(src.int(0, 3)))
    return path


def header_value(src: Source, name: bytes) -> bytes:
    known = VALUES.get(name)
    if known is not None and src.bool(0.8):
        return src.choice(known)
    if src.bool(0.2):
        return src.bytes(24)
    return b"v" * src.int(0, 40 if src.bool(0.9) else 3000)  # long ones meet the limit


def chunked_body(src: Source) -> bytes:
    """A chunked body (RFC 9112 §7.1), with bad sizes, extensions and trailers now and then."""
    out = bytearray()
    for _ in range(src.int(0, 4)):
        data = src.bytes(40)
        size = b"%x" % len(data)
        bad = src.int(0, 9)
        if bad == 0:
            size = src.choice(
                [b"ffffffffffffffffffff", b"-1", b"0x5", b" 5", b"5 ", b"", b"g", b"1" * 30]
            )
        elif bad == 1:
            size = b"%x" % (len(data) + src.int(-3, 3))
        elif bad == 2:
            size += src.choice([b";a=b", b";", b'; a="x"', b";\x00"])
        elif bad == 3:
            size = size.upper().rjust(src.int(1, 20), b"0")
        out += size + src.choice(EOLS) + data + src.choice(EOLS)
    if src.bool(0.9):
        out += b"0" + src.choice(EOLS)
        if src.bool(0.2):
            out += b"Trailer-A: x" + src.choice(EOLS)
        out += src.choice(EOLS)
    return bytes(out)


def request(src: Source) -> bytes:
    """One request, valid most of the time, with odd parts now and then."""
    method = src.choice(ODD_METHODS) if src.bool(0.05) else src.choice(METHODS)
    line = method + b" " + target(src) + b" " + src.choice(VERSIONS)
    eol = src.choice(EOLS)
    headers: list[tuple[bytes, bytes]] = []
    for _ in range(src.int(0, 5)):
        name = src.choice(ODD_NAMES) if src.bool(0.05) else src.choice(NAMES)
        headers.append((name, header_value(src, name)))
    body = b""
    kind = src.int(0, 5)
    if kind == 1:
        body = src.bytes(64)
        length = len(body) + (src.int(-4, 4) if src.bool(0.2) else 0)
        headers.append((b"Content-Length", b"%d" % length))
    elif kind == 2:
        headers.append((b"Transfer-Encoding", b"chunked"))
        body = chunked_body(src)
    elif kind == 3:
        headers.append((b"Content-Length", src.choice(LENGTHS)))
    elif kind == 4:
        headers += [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
    head = line + eol + b"".join(n + b": " + v + eol for n, v in headers) + eol
    return head + body


def http_case(src: Source) -> tuple[bytes, list[int], int, int]:
    """(bytes, cuts, max_header_bytes, max_body)."""
    kind = src.int(0, 9)
    if kind == 0:
        data = src.bytes(400)
    elif kind == 1:
        data = request(src)[: src.int(0, 60)] + src.bytes(200)
    elif kind == 2:
        # An Upgrade request followed by whatever (a WebSocket's frames, another request).
        data = b"GET /ws/x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        data += request(src) if src.bool() else src.bytes(60)
    else:
        data = b"".join(request(src) for _ in range(src.int(1, 6)))
        if src.bool(0.6):
            data = mutate(src, data)
    max_header = src.choice([256, 1024, 16384])
    max_body = src.choice([0, 16, 1024, 65536])
    return data, cuts(src, len(data)), max_header, max_body


@dataclass
class Parsed:
    requests: list[Request]
    status: int | None
    upgrade_data: bytes | None
    pending: bool


def parse(data: bytes, at: list[int], max_header: int, max_body: int, decline: bool) -> Parsed:
    """Feed the pieces; with ``decline``, answer every Upgrade without switching, as the
    server does for a path that doesn't upgrade (``continue_http`` after each piece)."""
    parser = RequestParser(max_header_bytes=max_header, max_body=max_body)
    for piece in pieces(data, at):
        parser.feed(piece)
        while decline and parser.upgrade_data is not None:
            parser.continue_http()
    error = parser.error
    if error is not None:
        assert isinstance(error, HttpError), repr(error)
        assert error.status in STATUSES, error.status
        assert isinstance(error.reason, str)
    return Parsed(
        list(parser.requests),
        None if error is None else error.status,
        parser.upgrade_data,
        parser.pending(),
    )


def check_request(req: Request, max_header: int, max_body: int) -> None:
    assert req.method and req.method.isascii()
    assert isinstance(req.path, str) and isinstance(req.target, str)
    assert len(req.body) <= max_body
    size = len(req.target)
    for name, value in req.headers.items():
        assert name == name.lower()
        for text in (name, value):
            assert "\r" not in text and "\n" not in text and "\0" not in text, (name, value)
        size += len(name) + len(value) + 4
    # Repeated headers are joined with one "," per repeat, a byte less than the 4 counted.
    assert size <= max_header
    assert req.http_minor in (0, 1)


def check_http(data: bytes, at: list[int], max_header: int, max_body: int) -> None:
    for decline in (False, True):
        whole, elapsed, peak = measured(
            functools.partial(parse, data, [], max_header, max_body, decline)
        )
        check_bounds(len(data), elapsed, peak, "RequestParser")
        for req in whole.requests:
            check_request(req, max_header, max_body)
        assert sum(len(r.body) for r in whole.requests) <= len(data)
        if decline:
            assert whole.upgrade_data is None
        if at:
            cut = parse(data, at, max_header, max_body, decline)
            assert same(cut, whole), f"cut at {at}:\n{cut}\nwhole:\n{whole}"


def same(a: Parsed, b: Parsed) -> bool:
    """The same outcome, but for the one way reads may matter: a head over the size limit
    may be refused (431) in one, and in the other be refused as malformed (400) or still be
    incomplete, as the limit applies to what has been read."""
    if (a.requests, a.upgrade_data) != (b.requests, b.upgrade_data):
        return False
    if a.status == b.status:
        return a.pending == b.pending
    for one, other in ((a, b), (b, a)):
        if one.status == 431 and (other.status == 400 or (other.status is None and other.pending)):
            return True
    return False


def one_input(src: Source) -> None:
    check_http(*http_case(src))


@SETTINGS
@given(st.data())
def test_structured_requests(data):
    one_input(HypothesisSource(data))


@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=5))
def test_random_bytes(data, at):
    check_http(data, sorted({min(a, len(data)) for a in at}), 1024, 256)


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_random_bytes_after_a_request_line(tail, at):
    data = b"POST /pub/x HTTP/1.1\r\n" + tail
    check_http(data, sorted({min(a, len(data)) for a in at}), 1024, 256)


if __name__ == "__main__":
    run_long("http", one_input, sys.argv)
