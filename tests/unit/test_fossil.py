"""Fossil deltas: ours must apply with our decoder and with the official Python SDK's."""

import random

import orjson
import pytest
from centrifuge.fossil import apply_delta as sdk_apply_delta

from tidings.protocol.centrifuge.fossil import DeltaError, apply_delta, checksum, make_delta


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(0, 6)):
        if not out:
            out += b"x"
        i = rng.randrange(len(out))
        new = bytes(rng.randint(32, 126) for _ in range(rng.randint(0, 12)))
        out[i : i + rng.randint(0, 10)] = new
    return bytes(out)


@pytest.mark.parametrize("seed", range(20))
def test_random_edits_round_trip_with_both_decoders(seed):
    rng = random.Random(seed)
    for _ in range(20):
        size = rng.randint(0, 60)
        source = orjson.dumps({"items": [{"id": i, "v": rng.random()} for i in range(size)]})
        target = mutate(rng, source)
        delta = make_delta(source, target)
        assert apply_delta(source, delta) == target
        assert bytes(sdk_apply_delta(source, delta)) == target


def test_small_change_in_a_large_document_gives_a_small_delta():
    source = orjson.dumps({"items": [{"id": i, "v": i * 1.5} for i in range(2000)]})
    target = source.replace(b'"id":1000,', b'"id":9999,')
    delta = make_delta(source, target)
    assert len(delta) < 64
    assert bytes(sdk_apply_delta(source, delta)) == target


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (b"", b""),
        (b"", b"new"),
        (b"short", b"shorter"),
        (b"x" * 100, b""),
        (b"a" * 5000, b"a" * 4999 + b"b"),
    ],
)
def test_edge_cases(source, target):
    delta = make_delta(source, target)
    assert apply_delta(source, delta) == target
    assert bytes(sdk_apply_delta(source, delta)) == target


def test_checksum_pads_the_last_word():
    assert checksum(b"\x00\x00\x00\x01") == 1
    assert checksum(b"\x01") == 0x01000000
    assert checksum(b"\xff\xff\xff\xff\x00\x00\x00\x02") == 1  # wraps at 2**32


@pytest.mark.parametrize(
    "delta",
    [b"", b"5\n", b"5\n5:abc", b"3\n3:abcXYZ;", b"3\n9@0,", b"3\n3:abc0;", b"3\n3?abc"],
)
def test_bad_deltas_raise(delta):
    with pytest.raises(DeltaError):
        apply_delta(b"source data", delta)
