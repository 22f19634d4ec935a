"""Fuzz target: ``WebSocketReader`` (RFC 6455 frames from a client) on hostile input.

Each case is a byte string, the points where it is cut into ``receive_data`` calls, and
whether EOF follows (and more bytes after it). The oracle:

- the reader never raises; when it closes it reports a close code that a peer may be sent
  (never 1011, which the ``websockets`` layer uses for an exception of its own);
- every message is at most ``max_size`` bytes; a text message is valid UTF-8 (§8.1);
- nothing is delivered once the reader has closed (§7.1.7: no more processing after
  failing the connection), and the result doesn't depend on how the bytes were cut;
- what it answers parses as unmasked server frames: pongs, then at most one close frame;
- a sequence of valid frames (fragmented messages, control frames between fragments, a
  closing handshake) yields exactly its messages and a pong per ping;
- a case takes bounded time, and its peak memory (tracemalloc) is linear in its size.

Sources, settings and the long run are those of ``test_fuzz_http``::

    python tests/fuzz/test_fuzz_websocket.py --seconds 600
"""

from __future__ import annotations

import itertools
import logging
import struct
import sys
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_http import (
    SETTINGS,
    HypothesisSource,
    Source,
    check_bounds,
    cuts,
    measured,
    mutate,
    pieces,
    run_long,
)
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol, Side, State

from tidings.protocol.websocket import Message, WebSocketReader

# Close codes that may be sent (RFC 6455 §7.4.1, §7.4.2; the IANA registry) and reported.
# A 1011 of the server's own would mean an exception inside websockets, which also logs
# "parser failed": the log is checked, since a client may send 1011 and get it echoed.
SENDABLE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
REPORTED = SENDABLE | {1005, 1006} | set(range(3000, 5000))


@dataclass
class Wire:
    """What a client sends, and what a correct server makes of it (when known)."""

    data: bytes
    messages: list[tuple[bytes, bool]] | None = None  # None: not a valid session
    pings: list[bytes] = field(default_factory=list)
    close_code: int | None = None


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x00\x00\x00\x00",
    length_form: int = 0,
    declared: int | None = None,
) -> bytes:
    """A client frame (§5.2). ``length_form``: 0 shortest, 1 16-bit, 2 64-bit (RFC 6455
    wants the shortest); ``declared`` overrides the length field; ``mask`` None: unmasked."""
    n = len(payload) if declared is None else declared
    head = bytes([(fin << 7) | (rsv << 4) | opcode])
    bit = 0x80 if mask is not None else 0
    if length_form == 0 and n < 126:
        head += bytes([bit | n])
    elif length_form <= 1 and n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n % 2**64)
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def text_payload(src: Source) -> bytes:
    chars = ["a", "é", "€", "𝄞", "\u2028", "\x00", " "]
    return "".join(src.choice(chars) for _ in range(src.int(0, 20))).encode()


def valid_session(src: Source, max_size: int) -> Wire:
    """Messages fragmented into frames with pings and pongs between them; maybe a close."""
    out = bytearray()
    messages: list[tuple[bytes, bool]] = []
    pings: list[bytes] = []
    mask = src.bytes(4).ljust(4, b"\x00")
    for _ in range(src.int(0, 4)):
        text = src.bool()
        data = text_payload(src) if text else src.bytes(60)
        data = data[:max_size]
        if text:
            data = data.decode("utf-8", "ignore").encode()
        # Fragment boundaries may fall inside a UTF-8 sequence (§5.4 allows it).
        bounds = sorted({src.int(0, len(data)) for _ in range(src.int(0, 3))})
        edges = [0, *bounds, len(data)]  # empty fragments too: they are valid frames
        parts = [data[a:b] for a, b in itertools.pairwise(edges)]
        for i, part in enumerate(parts):
            opcode = (Opcode.TEXT if text else Opcode.BINARY) if i == 0 else Opcode.CONT
            out += frame(opcode, part, fin=i == len(parts) - 1, mask=mask)
            if src.bool(0.3):
                ping = src.bytes(125)
                pings.append(ping)
                out += frame(Opcode.PING, ping, mask=mask)
            if src.bool(0.1):
                out += frame(Opcode.PONG, src.bytes(20), mask=mask)
        messages.append((data, text))
    close_code = None
    if src.bool(0.4):
        close_code = src.choice([1000, 1001, 3000, 4999])
        reason = text_payload(src)[:100]
        out += frame(Opcode.CLOSE, struct.pack("!H", close_code) + reason, mask=mask)
    return Wire(bytes(out), messages, pings, close_code)


def random_frame(src: Source) -> bytes:
    opcode = src.int(0, 15) if src.bool(0.3) else src.choice([0, 1, 2, 8, 9, 10])
    if opcode == Opcode.CLOSE and src.bool(0.7):
        code = src.choice([0, 999, 1000, 1004, 1005, 1006, 1011, 1015, 2999, 3000, 5000, 65535])
        payload = struct.pack("!H", code) + (src.bytes(10) if src.bool(0.3) else b"bye")
        if src.bool(0.1):
            payload = payload[:1]
    else:
        payload = src.bytes(200) if src.bool(0.2) else text_payload(src)
    declared = None
    if src.bool(0.1):
        declared = src.choice([len(payload) + 1, 126, 65535, 65536, 2**63 - 1, 2**63, 2**64 - 1])
    return frame(
        opcode,
        payload,
        fin=src.bool(0.8),
        rsv=src.int(0, 7) if src.bool(0.1) else 0,
        mask=None if src.bool(0.05) else src.bytes(4).ljust(4, b"\x00"),
        length_form=src.int(0, 2) if src.bool(0.2) else 0,
        declared=declared,
    )


def ws_case(src: Source) -> tuple[Wire, list[int], int, int]:
    """(wire, cuts, max_size, eof: 0 no, 1 EOF, 2 EOF and more bytes after it)."""
    kind = src.int(0, 5)
    # Control frames (up to 125 bytes) count against the limit too: see valid_session.
    max_size = src.choice([125, 1024, 1 << 20] if kind <= 1 else [0, 16, 125, 1024, 1 << 20])
    if kind <= 1:
        wire = valid_session(src, max_size)
    elif kind == 2:
        wire = Wire(mutate(src, valid_session(src, max_size).data))
    elif kind == 3:
        wire = Wire(src.bytes(300))
    else:
        frames = [random_frame(src) for _ in range(src.int(1, 6))]
        wire = Wire(mutate(src, b"".join(frames), 2) if src.bool(0.3) else b"".join(frames))
    return wire, cuts(src, len(wire.data)), max_size, src.int(0, 2)


@dataclass
class Read:
    messages: list[Message]
    out: bytes
    closed: bool
    close_code: int | None


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def read(data: bytes, at: list[int], max_size: int, eof: int) -> Read:
    reader = WebSocketReader(max_size)
    messages: list[Message] = []
    out = b""
    for piece in pieces(data, at):
        was_closed = reader.closed
        got, sent = reader.receive_data(piece)
        assert not (was_closed and got), "messages after the reader closed"
        messages += got
        out += sent
    if eof:
        out += reader.receive_eof()
        if eof == 2:
            got, sent = reader.receive_data(b"\x81\x80\x00\x00\x00\x00")
            assert not got
            out += sent
    return Read(messages, out, reader.closed, reader.close_code)


def server_frames(out: bytes) -> list[Frame]:
    """``out`` as a client reads it; it must be well-formed unmasked frames."""
    client = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    client.receive_data(out)
    frames = [e for e in client.events_received() if isinstance(e, Frame)]
    assert client.parser_exc is None, client.parser_exc
    return frames


def check_ws(wire: Wire, at: list[int], max_size: int, eof: int) -> None:
    errors = _Errors()
    logger = logging.getLogger("websockets")
    logger.addHandler(errors)
    try:
        whole, elapsed, peak = measured(lambda: read(wire.data, [], max_size, eof))
        cut = read(wire.data, at, max_size, eof) if at else whole
    finally:
        logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
    check_bounds(len(wire.data), elapsed, peak, "WebSocketReader")
    for message in whole.messages:
        assert isinstance(message.data, bytes) and len(message.data) <= max_size
        if message.text:
            message.data.decode("utf-8")
    if whole.closed:
        assert whole.close_code in REPORTED, whole.close_code
    frames = server_frames(whole.out)
    assert all(f.opcode in (Opcode.PONG, Opcode.CLOSE) for f in frames), frames
    closes = [f for f in frames if f.opcode is Opcode.CLOSE]
    assert len(closes) <= 1 and (not closes or frames[-1] is closes[0]), frames
    if closes:
        code = Close.parse(closes[0].data).code
        assert code in SENDABLE or 3000 <= code < 5000 or code == 1005, code
        assert whole.closed
    assert cut == whole, f"cut at {at}:\n{cut}\nwhole:\n{whole}"
    if wire.messages is not None:
        assert [(m.data, m.text) for m in whole.messages] == wire.messages
        assert [f.data for f in frames if f.opcode is Opcode.PONG] == wire.pings
        if wire.close_code is not None:
            assert (whole.closed, whole.close_code) == (True, wire.close_code)
            assert closes
        elif not eof:
            assert not whole.closed


def one_input(src: Source) -> None:
    check_ws(*ws_case(src))


@SETTINGS
@given(st.data())
def test_structured_frames(data):
    one_input(HypothesisSource(data))


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=5), st.integers(0, 2))
def test_random_bytes(data, at, eof):
    check_ws(Wire(data), sorted({min(a, len(data)) for a in at}), 1024, eof)


if __name__ == "__main__":
    run_long("websocket", one_input, sys.argv)
