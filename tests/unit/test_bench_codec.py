"""``python -m tidings.bench.codec``: every case runs, and a measurement is a time."""

from __future__ import annotations

from tidings.bench.codec import cases, measure
from tidings.protocol.centrifuge.codec import JSON, PROTOBUF


def test_every_case_runs_for_both_codecs() -> None:
    for codec in (PROTOBUF, JSON):
        ops = cases(codec)
        assert len(ops) == 7
        for name, op in ops.items():
            result = op()
            if name.startswith("decode"):
                assert isinstance(result, list)
                assert len(result) == 1
            else:
                assert isinstance(result, bytes)
                assert result


def test_measure_gives_microseconds() -> None:
    assert 0 < measure(lambda: None, 1) < 100
