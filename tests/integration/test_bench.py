"""``tidings bench fanout`` run for real with tiny numbers: a check that it counts every
delivery and reports its figures, not a measure of speed."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from tidings.bench.peers import nchan_available
from tidings.testing import TIMEOUT

CLI = [sys.executable, "-m", "tidings.cli", "bench", "fanout"]
SUBSCRIBERS = 20
MESSAGES = 50


async def run_bench(tmp_path: Path, *extra: str) -> tuple[int, str, dict]:
    out = tmp_path / "bench.json"
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "--subscribers",
        str(SUBSCRIBERS),
        "--messages",
        str(MESSAGES),
        "--sample",
        "5",
        "--latency-seconds",
        "0.5",
        "--timeout",
        str(TIMEOUT),
        "--json",
        str(out),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 6 * TIMEOUT)
    assert proc.returncode == 0, (stdout.decode(), stderr.decode())
    # The progress bar goes through every phase, each ending full.
    bars = stderr.decode()
    for phase in ("starting", "connecting", "subscribing", "saturated", "paced"):
        done = re.search(rf"tidings: {phase} \[#+\] ([\d,]+)/([\d,]+)\n", bars)
        assert done is not None and done.group(1) == done.group(2), (phase, bars)
    return proc.returncode, stdout.decode(), json.loads(out.read_text())


def check_result(result: dict, server: str) -> None:
    assert result["server"] == server
    assert result["error"] == ""
    assert result["closed_by_server"] == 0
    assert result["frame_bytes"] == 102  # 100-byte messages in unmasked text frames
    for phase in (result["throughput"], result["paced"]):
        assert phase["expected"] == SUBSCRIBERS * phase["messages"]
        assert phase["deliveries"] == phase["expected"]
        assert phase["per_second"] > 0
        assert phase["publish_errors"] == []
        # 5 sampled subscribers parse every frame: one latency sample each per message.
        assert phase["latency_ms"]["samples"] == 5 * phase["messages"]
        assert 0 <= phase["latency_ms"]["p50"] <= phase["latency_ms"]["p99"]
    assert result["throughput"]["messages"] == MESSAGES
    assert result["rss_per_connection_kib"] is not None


async def test_bench_counts_every_delivery(tmp_path: Path) -> None:
    _, stdout, data = await run_bench(tmp_path, "--peer", "websockets")
    tidings, peer = data["results"]
    check_result(tidings, "tidings")
    check_result(peer, "websockets")
    assert data["messages"] == MESSAGES
    assert f"{SUBSCRIBERS * MESSAGES:,} deliveries in" in stdout
    assert "tidings / websockets: deliveries/s x" in stdout
    assert "load generator CPU" in stdout
    # Each pinned CPU's time given to other guests is told, as it lowers every figure.
    for core in tidings["throughput"]["cores"].values():
        assert 0 <= core["stolen"] <= 1
    assert "% stolen" in stdout


async def test_bench_against_nchan(tmp_path: Path) -> None:
    # `make test` installs nginx and Nchan (.ci/system-deps): missing them is a failure.
    assert not nchan_available(), nchan_available()
    _, _, data = await run_bench(tmp_path, "--peer", "nchan", "--read-batch", "0")
    check_result(data["results"][1], "nchan")


async def test_attack_bench_holds_the_attack_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "attack.json"
    args = ["--slowloris", "5", "--pipeliners", "5", "--stalled", "5", "--seconds", "1"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.cli",
        "bench",
        "attack",
        *args,
        "--json",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 6 * TIMEOUT)
    assert proc.returncode == 0, (stdout.decode(), stderr.decode())
    result = json.loads(out.read_text())["result"]
    assert result["rss_before_kib"] > 0 and result["rss_peak_kib"] >= result["rss_before_kib"]
    assert result["sent_during"] >= 1 and len(result["latency_before_ms"]) == 2
    assert "server RSS" in stdout.decode()


async def test_bench_on_redis_counts_every_delivery_across_two_nodes(tmp_path: Path) -> None:
    _, stdout, data = await run_bench(tmp_path, "--peer", "redis", "--peer", "redis-2nodes")
    _, same, cross = data["results"]
    check_result(same, "tidings-redis")
    check_result(cross, "tidings-redis-2nodes")
    assert "tidings / tidings-redis-2nodes: deliveries/s x" in stdout


async def test_bench_spreads_subscribers_and_publishers_over_nodes_on_one_redis(
    tmp_path: Path,
) -> None:
    # 3 nodes: 20 subscribers split 7/7/6 (each node's own count), 4 publishers 2/1/1.
    _, stdout, data = await run_bench(tmp_path, "--peer", "redis-nodes=3")
    nodes = data["results"][1]
    check_result(nodes, "tidings-redis-nodes=3")
    assert nodes["nodes"] == 3
    assert nodes["node_subscribers"] == [7, 7, 6]
    assert "publishers per node: 2, 1, 1" in stdout
    assert "Redis pid" in stdout
    for phase in (nodes["throughput"], nodes["paced"]):
        assert len(phase["node_cpu"]) == 3
        assert set(phase["helper_cpu"]) == {"Redis"}
        assert phase["server_cpu"] == pytest.approx(sum(phase["node_cpu"]), abs=0.01)
    assert "tidings / tidings-redis-nodes=3: deliveries/s x" in stdout
    assert "tidings-redis-nodes=3 per node: " in stdout


async def test_bench_on_memory_nodes_publishes_every_message_to_each(tmp_path: Path) -> None:
    # The baseline of redis-nodes=N: the same nodes on memory brokers. Every subscriber,
    # whichever node it is on, still counts every message; each redis node is set against it.
    _, stdout, data = await run_bench(
        tmp_path, "--peer", "memory-nodes=2", "--peer", "redis-nodes=2"
    )
    memory, redis = data["results"][1:]
    check_result(memory, "tidings-memory-nodes=2")
    check_result(redis, "tidings-redis-nodes=2")
    assert memory["node_subscribers"] == [10, 10]
    assert "every message published to every node, publishers per node: 4, 4" in stdout
    assert "each on its memory broker" in stdout
    for phase in (memory["throughput"], memory["paced"]):
        assert len(phase["node_cpu"]) == 2 and phase["helper_cpu"] == {}
    # One line against the memory broker, one against the memory nodes (like for like);
    # a run this short may have too few clock ticks for a ratio, never for the line.
    lines = [ln for ln in stdout.splitlines() if ln.startswith("tidings-redis-nodes=2 per node:")]
    assert len(lines) == 2, lines
    assert "memory broker" in lines[0] and "tidings-memory-nodes=2" in lines[1], lines


async def test_bench_refuses_a_node_count_out_of_range() -> None:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "--peer", "redis-nodes=0", stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2
    assert b"redis-nodes=N takes N from 1 to 16, got 0" in stderr
    proc = await asyncio.create_subprocess_exec(
        *CLI, "--peer", "memory-nodes=17", stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2
    assert b"memory-nodes=N takes N from 1 to 16, got 17" in stderr


async def test_publish_bench_reports_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "publish.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidings.cli", "bench", "publish", "-m", "200", "-c", "8",
        "--json", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 6 * TIMEOUT)
    assert proc.returncode == 0, stderr.decode()
    results = json.loads(out.read_text())["results"]
    assert set(results) == {
        "redis sequential", "redis concurrent", "http sequential", "http concurrent",
    }  # fmt: skip
    for figures in results.values():
        assert figures["per_second"] > 0 and figures["redis_us_per_publication"] > 0
    assert b"redis:// / http:// (concurrent): x" in stdout


async def test_bench_against_the_asgi_front_end(tmp_path: Path) -> None:
    # tidings.asgi under uvicorn: the same endpoints, every delivery counted the same way.
    _, stdout, data = await run_bench(tmp_path, "--peer", "asgi")
    tidings, peer = data["results"]
    check_result(tidings, "tidings")
    check_result(peer, "asgi")
    assert "tidings / asgi: deliveries/s x" in stdout


async def test_bench_with_durable_history_counts_every_delivery(tmp_path: Path) -> None:
    _, stdout, data = await run_bench(tmp_path, "--peer", "sqlite")
    tidings, durable = data["results"]
    check_result(tidings, "tidings")
    check_result(durable, "tidings-sqlite")
    assert "tidings / tidings-sqlite: deliveries/s x" in stdout


async def test_publish_bench_compares_durable_history_with_memory(tmp_path: Path) -> None:
    out = tmp_path / "publish.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidings.cli", "bench", "publish", "-m", "200", "-c", "8",
        "--peer", "sqlite", "--json", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 6 * TIMEOUT)
    assert proc.returncode == 0, stderr.decode()
    results = json.loads(out.read_text())["results"]
    for name in ("memory", "sqlite"):
        for mode in ("sequential", "concurrent"):
            assert results[f"{name} {mode}"]["per_second"] > 0
    assert b"sqlite / memory (concurrent): x" in stdout
