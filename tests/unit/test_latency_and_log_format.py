"""``Latencies`` counts observations into Prometheus-style ``le`` buckets; ``JsonFormatter``
writes one JSON object per record."""

from __future__ import annotations

import json
import logging
import sys

from tidings.core.latency import BUCKETS, Latencies
from tidings.server.logs import JsonFormatter


def test_an_observation_on_a_bound_counts_in_that_bucket() -> None:
    lat = Latencies()
    lat.observe("publish", BUCKETS[0])  # le is "less than or equal"
    lat.observe("publish", BUCKETS[0] * 1.01)
    lat.observe("publish", BUCKETS[-1] * 2)  # past every bound: the +Inf bucket only
    counts = lat.counts["publish"]
    assert len(counts) == len(BUCKETS) + 1
    assert counts[0] == 1 and counts[1] == 1 and counts[-1] == 1 and sum(counts) == 3
    assert lat.sums["publish"] == BUCKETS[0] + BUCKETS[0] * 1.01 + BUCKETS[-1] * 2


def record(msg: str, *args: object, **kwargs: object) -> logging.LogRecord:
    return logging.getLogger("tidings.test").makeRecord(
        "tidings.test", logging.WARNING, __file__, 1, msg, args, None, **kwargs
    )


def test_json_lines_carry_fields_but_not_over_their_own_keys() -> None:
    rec = record("%s went", "ws", extra={"fields": {"transport": "ws", "message": "forged"}})
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "ws went" and parsed["transport"] == "ws"
    assert parsed["level"] == "warning" and parsed["logger"] == "tidings.test"


def test_json_lines_hold_a_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]
