"""Fossil delta encoding (the format of Fossil SCM's delta.c, used by the client protocol's
``delta: "fossil"`` publications), written for tidings from the format's description.

A delta turns ``source`` into ``target``: ``<len(target)>\\n``, then commands — copy
``<count>@<offset>,`` from the source, insert ``<count>:<bytes>`` — then ``<checksum>;``.
Integers are base-64 numbers, most significant digit first, with the digits below.
The checksum adds up the target as big-endian 32-bit words (the last one zero-padded).
"""

from __future__ import annotations

__all__ = [
    "BLOCK",
    "DIGITS",
    "MAX_PROBES",
    "DeltaError",
    "apply_delta",
    "checksum",
    "make_delta",
]

DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_VALUE = {d: i for i, d in enumerate(DIGITS)}
BLOCK = 16  # matches are looked for in source blocks of this size
MAX_PROBES = 16  # candidate blocks tried per position (Fossil tries 250; this is Python)


class DeltaError(ValueError):
    """A delta that can't be applied to the given source."""


def _int(value: int) -> bytes:
    if value == 0:
        return b"0"
    out = bytearray()
    while value:
        out.append(DIGITS[value & 63])
        value >>= 6
    out.reverse()
    return bytes(out)


def checksum(data: bytes) -> int:
    total = 0
    full = len(data) - len(data) % 4
    for i in range(0, full, 4):
        total += int.from_bytes(data[i : i + 4], "big")
    if full < len(data):
        total += int.from_bytes(data[full:].ljust(4, b"\0"), "big")
    return total & 0xFFFFFFFF


def _common_prefix(a: bytes, i: int, b: bytes, j: int) -> int:
    """How many bytes ``a[i:]`` and ``b[j:]`` share at their start (slices compare in C)."""
    limit = min(len(a) - i, len(b) - j)
    n = 0
    step = 256
    while n < limit:
        size = min(step, limit - n)
        if a[i + n : i + n + size] == b[j + n : j + n + size]:
            n += size
            step *= 2
        elif size == 1:
            break
        else:
            step = max(1, size // 2)
    return n


def _common_suffix(a: bytes, i: int, b: bytes, j: int, limit: int) -> int:
    """How many bytes before ``a[i]`` and ``b[j]`` are equal, at most ``limit``."""
    limit = min(limit, i, j)
    n = 0
    while n < limit and a[i - n - 1] == b[j - n - 1]:
        n += 1
    return n


def make_delta(source: bytes, target: bytes) -> bytes:
    """A delta from ``source`` to ``target``."""
    out = bytearray(_int(len(target)) + b"\n")
    if len(source) <= BLOCK:
        if target:
            out += _int(len(target)) + b":" + target
        out += _int(checksum(target)) + b";"
        return bytes(out)
    # Index every whole source block by its bytes; later blocks are tried first.
    blocks: dict[bytes, list[int]] = {}
    for offset in range(0, len(source) - BLOCK + 1, BLOCK):
        blocks.setdefault(source[offset : offset + BLOCK], []).insert(0, offset)
    base = 0  # target bytes before base are already encoded
    pos = 0
    end = len(target) - BLOCK
    while pos <= end:
        candidates = blocks.get(target[pos : pos + BLOCK])
        best_count = best_src = best_start = 0
        if candidates:
            for src in candidates[:MAX_PROBES]:
                forward = BLOCK + _common_prefix(source, src + BLOCK, target, pos + BLOCK)
                back = _common_suffix(source, src, target, pos, pos - base)
                count = forward + back
                if count > best_count:
                    best_count, best_src, best_start = count, src - back, pos - back
        literal = best_start - base
        if best_count and best_count >= (
            len(_int(literal)) + len(_int(best_count)) + len(_int(best_src)) + 3
        ):
            if literal:
                out += _int(literal) + b":" + target[base:best_start]
            out += _int(best_count) + b"@" + _int(best_src) + b","
            base = best_start + best_count
            pos = base
        else:
            pos += 1
    if base < len(target):
        out += _int(len(target) - base) + b":" + target[base:]
    out += _int(checksum(target)) + b";"
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def number(self) -> int:
        value = 0
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] in _VALUE:
            value = (value << 6) | _VALUE[self.data[self.pos]]
            self.pos += 1
        if self.pos == start:
            raise DeltaError("number expected")
        return value

    def char(self) -> int:
        if self.pos >= len(self.data):
            raise DeltaError("unexpected end of delta")
        self.pos += 1
        return self.data[self.pos - 1]


def apply_delta(source: bytes, delta: bytes) -> bytes:
    """Apply ``delta`` to ``source``; raises ``DeltaError`` on any inconsistency."""
    reader = _Reader(delta)
    size = reader.number()
    if reader.char() != ord("\n"):
        raise DeltaError("size not followed by a newline")
    out = bytearray()
    while True:
        count = reader.number()
        op = reader.char()
        if op == ord("@"):
            offset = reader.number()
            if reader.char() != ord(","):
                raise DeltaError("copy not followed by ','")
            if offset + count > len(source):
                raise DeltaError("copy past the end of the source")
            out += source[offset : offset + count]
        elif op == ord(":"):
            if reader.pos + count > len(delta):
                raise DeltaError("insert past the end of the delta")
            out += delta[reader.pos : reader.pos + count]
            reader.pos += count
        elif op == ord(";"):
            if len(out) != size:
                raise DeltaError("output size differs from the header")
            if count != checksum(bytes(out)):
                raise DeltaError("bad checksum")
            return bytes(out)
        else:
            raise DeltaError("unknown command")
        if len(out) > size:
            raise DeltaError("output larger than the header says")
