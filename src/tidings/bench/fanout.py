"""``tidings bench fanout``: N WebSocket subscribers on one channel, M messages.

The bench starts the server (``tidings serve`` on a free loopback port, or ``--url`` of a
running one) pinned to one CPU and runs the load generator pinned to another. It opens the
subscribers, measures the server's idle RSS per connection, then publishes M messages over
keep-alive HTTP with several requests in flight (the throughput phase: deliveries/s and
latency under saturation), then a paced phase at a fraction of that rate (latency under
normal load). Peers (``--peer websockets``, ``--peer nchan``, tidings on Redis, on N nodes
sharing one Redis or with durable history, ``--peer sqlite``) run the same way in the same
run, so figures can be compared as ratios. Every run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .loadgen import (
    FanPublisher,
    Progress,
    PublishDriver,
    Publisher,
    SampledSubscriber,
    Subscriber,
    Totals,
    close_all,
    connect_subscribers,
    frame_size,
    make_message,
    post_request,
    set_read_batch,
)
from .peer_redis import MAX_NODES, nodes_peer, start_nodes, start_on_redis
from .peers import (
    BenchError,
    Target,
    cpu_seconds,
    cpu_times,
    find_worker,
    raise_open_files,
    remote_target,
    rss_kib,
    start_asgi_peer,
    start_durable,
    start_nchan,
    start_tidings,
    start_websockets_peer,
    subscriber_count,
    subscriber_counts,
    wait_ready,
)

__all__ = [
    "PEERS",
    "PER_NODE_TARGET",
    "STALL",
    "Bench",
    "Phase",
    "Result",
    "add_arguments",
    "report",
    "run_fanout",
]

STALL = 3.0  # seconds without a byte, after the last answer, that end a phase early
PEERS = ("asgi", "websockets", "nchan", "redis", "redis-2nodes", "sqlite")
PER_NODE_TARGET = 0.8  # issue 8: the memory broker's fan-out figures held within 20% per node


def _peer(name: str) -> str:
    """A ``--peer`` value: one of ``PEERS``, ``redis-nodes=N`` or ``memory-nodes=N``."""
    if name in PEERS:
        return name
    try:
        if nodes_peer(name) is not None:
            return name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    raise argparse.ArgumentTypeError(
        f"invalid choice: {name!r} (choose from {', '.join(PEERS)}, redis-nodes=N, memory-nodes=N)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tidings bench fanout``."""
    add = parser.add_argument
    add("-n", "--subscribers", type=int, default=1000, help="WebSocket subscribers (1000)")
    add("-m", "--messages", type=int, help="messages (default: 2M deliveries' worth, 50-5000)")
    add("--size", type=int, default=100, help="message size in bytes (100)")
    add("--channel", default="bench", help="channel name (bench)")
    add("--publishers", type=int, default=4, help="publishing connections (4)")
    add("--depth", type=int, default=4, help="requests in flight per publisher (4)")
    add("--rate", type=float, help="pace the throughput phase at this many messages/s")
    add(
        "--latency-load",
        type=float,
        default=0.5,
        help="paced latency phase at this fraction of the measured rate (0.5; 0: skip)",
    )
    add("--latency-seconds", type=float, default=3.0, help="length of that phase (3)")
    add(
        "--read-batch",
        type=int,
        default=8,
        help="frames a counting subscriber lets queue before it reads (SO_RCVLOWAT; 8; 0: off)",
    )
    add("--sample", type=int, default=20, help="subscribers that parse frames for latency (20)")
    add(
        "--peer",
        action="append",
        type=_peer,
        default=[],
        metavar="{" + ",".join(PEERS) + ",redis-nodes=N,memory-nodes=N}",
        help="also bench this server the same way, for ratios (repeatable): asgi is "
        "tidings.asgi under uvicorn, redis is tidings on a Redis broker, redis-2nodes "
        "publishes through a second node on it, redis-nodes=N is N nodes on one Redis "
        f"(N 1-{MAX_NODES}, all on the server's CPU) sharing the subscribers and the "
        "publishers, memory-nodes=N the same nodes on memory brokers with every message "
        "published to each (their baseline), sqlite is tidings with durable history "
        "(--history-path)",
    )
    add("--url", help="bench a running tidings server (loopback only) instead of starting one")
    add("--api-key", help="its publish key (default: $TIDINGS_API_KEY)")
    add("--server-pid", type=int, help="its process id, to measure RSS and CPU")
    add("--server-cpu", type=int, default=0, help="CPU for the server (0)")
    add("--client-cpu", type=int, default=1, help="CPU for the load generator (1)")
    add("--no-pin", action="store_true", help="don't pin processes to CPUs")
    add("--timeout", type=float, default=120.0, help="limit per phase, seconds (120)")
    add("--json", dest="json_path", help="also write the results as JSON to this file")


@dataclass
class Phase:
    """One publishing phase's figures."""

    messages: int
    rate: float | None  # paced messages/s, None when unpaced
    expected: int
    deliveries: int
    seconds: float
    per_second: float
    latency_ms: dict[str, float]
    loadgen_cpu: float  # fraction of one CPU
    server_cpu: float | None  # of every node serving subscribers, summed
    server_us_per_delivery: float | None
    # Per pinned CPU ("server", "client"): fractions busy, in interrupts, in other processes.
    cores: dict[str, dict[str, float]] = field(default_factory=dict)
    publish_errors: list[str] = field(default_factory=list)
    # With several nodes: each one's CPU (fraction of one CPU), in the order of ``nodes``.
    node_cpu: list[float] = field(default_factory=list)
    # Other processes of the run (Redis, a publishing node): fraction of one CPU.
    helper_cpu: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    """Everything measured against one server."""

    server: str
    subscribers: int
    frame_bytes: int
    rss_per_connection_kib: float | None = None
    connect_seconds: float = 0.0
    closed_by_server: int = 0
    throughput: Phase | None = None
    paced: Phase | None = None
    error: str = ""
    # A redis-nodes=N peer: N, each node's own count of its subscribers once all were
    # subscribed, and where each process ran.
    nodes: int = 0
    node_subscribers: list[int] = field(default_factory=list)
    placement: list[str] = field(default_factory=list)


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {}
    ordered = sorted(samples_ns)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return round(ordered[round(q * last)] / 1e6, 2)

    return {"p50": at(0.5), "p99": at(0.99), "max": at(1.0), "samples": float(len(ordered))}


def _pin(cpus: tuple[int, int] | None) -> tuple[int, int] | None:
    if cpus is None:
        return None
    available = os.sched_getaffinity(0)
    if cpus[0] == cpus[1] or not set(cpus) <= available:
        print(f"tidings bench: CPUs {cpus} not both available; not pinning", file=sys.stderr)
        return None
    os.sched_setaffinity(0, {cpus[1]})
    return cpus


class Bench:
    """Runs the phases against one target."""

    def __init__(
        self,
        args: argparse.Namespace,
        target: Target,
        messages: int,
        cpus: tuple[int, int] | None,
    ) -> None:
        self.args = args
        self.cpus = cpus
        self.target = target
        self.messages = messages
        self.frame = frame_size(args.size)
        self.totals = Totals()
        self.subs: list[Subscriber] = []
        self.publishers: list[Publisher] = []  # the connections
        self.senders: list[Publisher | FanPublisher] = []  # what each message goes to
        self.result = Result(target.name, args.subscribers, self.frame)

    async def run(self) -> Result:
        args, target = self.args, self.target
        try:
            await self.setup()
            phase = await self.phase(self.messages, args.rate, "saturated")
            self.result.throughput = phase
            if args.latency_load > 0 and phase.per_second > 0:
                rate = args.latency_load * phase.per_second / args.subscribers
                count = min(self.messages, max(20, int(rate * args.latency_seconds)))
                self.result.paced = await self.phase(count, rate, "paced")
            self.result.closed_by_server = sum(1 for s in self.subs if s.error)
        except (BenchError, OSError, TimeoutError) as exc:
            self.result.error = str(exc) or type(exc).__name__
            tail = target.log_tail()
            if tail and tail not in self.result.error:
                self.result.error += "\n" + tail
        finally:
            await close_all([*self.subs, *self.publishers])
        return self.result

    @property
    def pids(self) -> list[int]:
        """The processes serving subscribers, whose CPU and memory are the server's."""
        return [n.pid for n in self.target.all_nodes if n.pid]

    async def setup(self) -> None:
        args, target = self.args, self.target
        if target.process is not None:
            starting = Progress(f"{target.name}: starting", 1)
            starting.update(0, final=False)
            for node in target.all_nodes:
                await wait_ready(node)
            starting.update(1, final=True)
        if target.pub_target is not None:  # publishing through another node
            await wait_ready(target.pub_target)
            target.pub_port = target.pub_target.port
        if target.name == "nchan":
            find_worker(target)
        loop = asyncio.get_running_loop()
        nodes = target.all_nodes
        for i in range(args.publishers):
            if target.fan_publish:  # to every node: no broker carries it between them
                conns = []
                for node in nodes:
                    _, pub = await loop.create_connection(Publisher, target.host, node.pub_port)
                    conns.append(pub)
                self.publishers += conns
                self.senders.append(FanPublisher(conns))
                continue
            port = nodes[i % len(nodes)].pub_port  # round-robin over the nodes, if several
            _, pub = await loop.create_connection(Publisher, target.host, port)
            self.publishers.append(pub)
            self.senders.append(pub)
        await subscriber_count(target)
        pids = self.pids
        rss0 = sum(rss_kib(pid) for pid in pids)
        started = time.monotonic()
        self.subs = await connect_subscribers(
            target.host,
            [node.port for node in nodes],
            target.sub_path,
            args.subscribers,
            min(args.sample, args.subscribers),
            self.totals,
            label=f"{target.name}: connecting",
        )
        await self.wait_subscribed(args.subscribers)
        self.result.connect_seconds = round(time.monotonic() - started, 2)
        if pids:
            rss1 = sum(rss_kib(pid) for pid in pids)
            self.result.rss_per_connection_kib = round((rss1 - rss0) / args.subscribers, 2)
        if target.cluster:
            self.result.nodes = len(nodes)
            self.result.node_subscribers = await subscriber_counts(target)
            self.result.placement = self.placement()

    def placement(self) -> list[str]:
        """Where a cluster's processes run and how the load is spread over them."""
        target, args = self.target, self.args
        nodes = target.all_nodes
        publishers = [len(range(k, args.publishers, len(nodes))) for k in range(len(nodes))]
        if target.fan_publish:
            publishers = [args.publishers] * len(nodes)

        def pinned(cpu: int | None) -> str:
            if cpu is None:
                return "not pinned"
            if self.cpus is not None and cpu == self.cpus[1]:
                return f"on CPU {cpu} with the load generator"
            return f"on CPU {cpu}"

        listing = ", ".join(f"{n.pid} (port {n.port})" for n in nodes)
        where = "not pinned" if target.cpu is None else f"all {pinned(target.cpu)}"
        on = "each on its memory broker" if target.fan_publish else "on one Redis"
        spread = (
            "every message published to every node, publishers per node: "
            if target.fan_publish
            else "publishes spread over the nodes, publishers per node: "
        )
        lines = [
            f"{len(nodes)} node{'s' if len(nodes) > 1 else ''} (tidings serve processes) "
            f"{on}, {where}: pids {listing}",
            "subscribers per node (each node's own count, on its own port): "
            + ", ".join(f"{n:,}" for n in self.result.node_subscribers),
            spread + ", ".join(str(n) for n in publishers),
        ]
        lines += [f"{h.name} pid {h.pid}, {pinned(h.cpu)}" for h in target.helpers]
        return lines

    async def wait_subscribed(self, count: int) -> None:
        """The handshake's answer may come before the subscription is in place."""
        deadline = time.monotonic() + self.args.timeout
        progress = Progress(f"{self.target.name}: subscribing", count)
        while True:
            found = await subscriber_count(self.target)
            progress.update(found, final=found >= count)
            if found >= count:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"only {found} of {count} subscribers registered in time")
            self.target.check_alive()
            await asyncio.sleep(0.1)

    async def phase(self, count: int, rate: float | None, label: str) -> Phase:
        args, target, totals = self.args, self.target, self.totals
        live = [s for s in self.subs if not s.error]
        expected = len(live) * count
        progress = Progress(f"{target.name}: {label}", expected)
        done = totals.expect(expected * self.frame)
        start_bytes = totals.bytes
        host, path, size = target.host, target.pub_path, args.size
        headers = target.pub_headers

        def request(i: int) -> bytes:
            return post_request(host, path, make_message(i, size), headers)

        driver = PublishDriver(
            self.senders, request, count, rate=rate, depth=1 if rate else args.depth
        )
        pids, helpers = self.pids, target.helpers
        cpu0, wall0 = time.process_time(), time.perf_counter()
        server0 = [cpu_seconds(pid) for pid in pids]
        helpers0 = [cpu_seconds(h.pid) for h in helpers]
        cores0 = cpu_times()
        if args.read_batch > 0:
            set_read_batch(live, args.read_batch * self.frame)
            driver.finished.add_done_callback(lambda _: set_read_batch(live, 1))
        driver.start()
        last_bytes, last_progress = totals.bytes, time.monotonic()
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)
            target.check_alive()
            progress.update((totals.bytes - start_bytes) // self.frame)
            now = time.monotonic()
            if totals.bytes != last_bytes:
                last_bytes, last_progress = totals.bytes, now
            elif driver.finished.done() and now - last_progress > STALL:
                break  # every answer is in and nothing arrives any more: frames were lost
            if now - wall0 > args.timeout:
                break
        cpu1, wall1 = time.process_time(), time.perf_counter()
        server1 = [cpu_seconds(pid) for pid in pids]
        helpers1 = [cpu_seconds(h.pid) for h in helpers]
        cores1 = cpu_times()
        driver.stop()
        wall = wall1 - wall0
        per_node = [b - a for a, b in zip(server0, server1, strict=True)]
        used = sum(per_node)
        helper_used = [b - a for a, b in zip(helpers0, helpers1, strict=True)]
        cores = {}
        if self.cpus:
            # Ours on each pinned CPU: the server's (when measured) or the bench's, and
            # the helpers pinned there.
            on_server, on_client = used if pids else None, cpu1 - cpu0
            for helper, seconds in zip(helpers, helper_used, strict=True):
                if helper.cpu == self.cpus[0] and on_server is not None:
                    on_server += seconds
                elif helper.cpu == self.cpus[1]:
                    on_client += seconds
            cores = _core_shares(cores0, cores1, self.cpus, (on_server, on_client))
        deliveries = (totals.bytes - start_bytes) // self.frame
        progress.update(deliveries, final=True)
        seconds = max(1e-9, (totals.last - driver.started) / 1e9)
        errors = [e for p in self.publishers for e in p.errors]
        for pub in self.publishers:
            pub.errors.clear()
        sizes = {n for s in self.subs if isinstance(s, SampledSubscriber) for n in s.sizes}
        if sizes - {self.frame}:
            raise BenchError(
                f"{target.name} sent frames of {sorted(sizes)} bytes, expected {self.frame}"
            )
        return Phase(
            messages=count,
            rate=round(rate, 1) if rate else None,
            expected=expected,
            deliveries=deliveries,
            seconds=round(seconds, 3),
            per_second=round(deliveries / seconds),
            latency_ms=_percentiles(totals.latencies),
            loadgen_cpu=round((cpu1 - cpu0) / wall, 3),
            server_cpu=round(used / wall, 3) if pids else None,
            server_us_per_delivery=(round(used / max(1, deliveries) * 1e6, 3) if pids else None),
            cores=cores,
            publish_errors=errors[:5],
            node_cpu=[round(t / wall, 3) for t in per_node] if len(per_node) > 1 else [],
            helper_cpu={
                h.name: round(t / wall, 3) for h, t in zip(helpers, helper_used, strict=True)
            },
        )


CpuTimes = dict[int, tuple[float, float, float, float]]


def _core_shares(
    before: CpuTimes, after: CpuTimes, cpus: tuple[int, int], own: tuple[float | None, float]
) -> dict[str, dict[str, float]]:
    """How busy each pinned CPU was, in interrupts, and in processes other than ours
    (``own``: CPU seconds of the server, when it can be measured, and of the bench)."""
    shares = {}
    for role, cpu, mine in zip(("server", "client"), cpus, own, strict=True):
        (p0, i0, s0, t0), (p1, i1, s1, t1) = before[cpu], after[cpu]
        span = max(1e-9, t1 - t0)
        shares[role] = {
            "busy": round((p1 - p0 + i1 - i0) / span, 3),
            "interrupts": round((i1 - i0) / span, 3),
            "stolen": round((s1 - s0) / span, 3),
            "others": -1.0 if mine is None else round(max(0.0, p1 - p0 - mine) / span, 3),
        }
    return shares


def _start(
    name: str, args: argparse.Namespace, cpu: int | None, cpus: tuple[int, int] | None
) -> Target:
    if name in ("redis", "redis-2nodes"):
        return start_on_redis(args.channel, args.subscribers, cpus, name == "redis-2nodes")
    nodes = nodes_peer(name)
    if nodes is not None:
        return start_nodes(args.channel, args.subscribers, nodes[1], cpus, nodes[0])
    if name == "sqlite":
        return start_durable(args.channel, secrets.token_urlsafe(12), args.subscribers, cpu)
    if name == "websockets":
        return start_websockets_peer(args.channel, cpu)
    if name == "asgi":
        return start_asgi_peer(args.channel, args.subscribers, cpu)
    if name == "nchan":
        return start_nchan(args.channel, args.subscribers, cpu)
    if args.url:
        key = args.api_key or os.environ.get("TIDINGS_API_KEY", "")
        return remote_target(args.url, args.channel, key, args.server_pid)
    return start_tidings(args.channel, secrets.token_urlsafe(12), args.subscribers, cpu)


async def _bench_all(
    args: argparse.Namespace, messages: int, cpus: tuple[int, int] | None
) -> list[Result]:
    results = []
    for name in ["tidings", *dict.fromkeys(args.peer)]:
        try:
            target = _start(name, args, cpus[0] if cpus else None, cpus)
        except BenchError as exc:
            results.append(Result(name, args.subscribers, frame_size(args.size), error=str(exc)))
            continue
        try:
            results.append(await Bench(args, target, messages, cpus).run())
        finally:
            target.stop()
    return results


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _format_phase(phase: Phase, label: str) -> list[str]:
    lat = phase.latency_ms
    latency = f"p50 {lat['p50']} ms, p99 {lat['p99']} ms" if lat else "no samples"
    lost = phase.expected - phase.deliveries
    lines = [
        f"  {label}: {phase.deliveries:,} deliveries in {phase.seconds:.2f} s = "
        f"{phase.per_second:,.0f}/s; latency {latency}"
        + (f"; {lost:,} NOT DELIVERED" if lost else "")
    ]
    cpu = f"load generator CPU {phase.loadgen_cpu:.0%}"
    if phase.server_cpu is not None:
        nodes = ""
        if phase.node_cpu:
            each = ", ".join(f"{share:.0%}" for share in phase.node_cpu)
            nodes = f" over {len(phase.node_cpu)} nodes ({each})"
        cpu = (
            f"server CPU {phase.server_cpu:.0%}{nodes} "
            f"({phase.server_us_per_delivery} µs/delivery), " + cpu
        )
    lines.append(f"    {cpu}")
    if phase.helper_cpu:
        helpers = ", ".join(f"{name} {share:.0%}" for name, share in phase.helper_cpu.items())
        lines.append(f"    CPU of the run's other processes: {helpers}")
    if phase.cores:
        parts = []
        for role in ("server", "client"):
            core = phase.cores[role]
            text = f"{role}'s {core['busy']:.0%} busy ({core['interrupts']:.0%} interrupts"
            if core["others"] >= 0:
                text += f", {core['others']:.0%} other processes"
            text += f", {core['stolen']:.0%} stolen"
            parts.append(text + ")")
        lines.append("    CPUs: " + ", ".join(parts))
        if max(core["others"] for core in phase.cores.values()) > 0.1:
            lines.append("    WARNING: other processes shared the pinned CPUs: figures are low")
        if max(core["stolen"] for core in phase.cores.values()) > 0.05:
            lines.append(
                "    WARNING: the hypervisor ran other guests on these CPUs (steal): "
                "figures are low and vary from run to run"
            )
    if phase.publish_errors:
        lines.append(f"    publish errors: {phase.publish_errors}")
    return lines


def report(results: list[Result], args: argparse.Namespace, messages: int, pinned: bool) -> str:
    m = _machine()
    lines = [
        f"tidings bench fanout: {args.subscribers:,} subscribers, {messages:,} messages of "
        f"{args.size} bytes ({frame_size(args.size)}-byte frames), "
        f"{args.publishers} publishers x {args.depth} in flight",
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}; "
        + (
            f"server on CPU {args.server_cpu}, load generator on CPU {args.client_cpu}"
            if pinned
            else "not pinned"
        ),
    ]
    for r in results:
        lines.append(f"{r.server}:")
        lines += [f"  {line}" for line in r.placement]
        if r.rss_per_connection_kib is not None:
            lines.append(
                f"  idle RSS per connection {r.rss_per_connection_kib:.2f} KiB "
                f"({r.subscribers:,} connected in {r.connect_seconds:.1f} s)"
            )
        if r.throughput:
            lines += _format_phase(r.throughput, "saturated")
        if r.paced:
            lines += _format_phase(r.paced, f"paced at {r.paced.rate} msg/s")
        if r.closed_by_server:
            lines.append(f"  {r.closed_by_server} subscribers closed by the server")
        if r.error:
            lines.append("  FAILED: " + r.error.replace("\n", "\n    "))
    base = results[0] if results else None
    if base is not None and base.throughput:
        for peer in results[1:]:
            if not peer.throughput or not peer.throughput.per_second:
                continue
            ratio = base.throughput.per_second / peer.throughput.per_second
            text = f"tidings / {peer.server}: deliveries/s x{ratio:.2f}"
            if base.rss_per_connection_kib and peer.rss_per_connection_kib:
                rss = base.rss_per_connection_kib / peer.rss_per_connection_kib
                text += f", idle RSS per connection x{rss:.2f}"
            lines.append(text)
            if peer.nodes:
                lines += _per_node(base.throughput, peer)
                twin = peer.server.replace("-redis-nodes=", "-memory-nodes=")
                alike = [r for r in results if r.server == twin and r is not peer]
                if alike and alike[0].throughput:
                    lines += _per_node(alike[0].throughput, peer, alike[0].server)
    return "\n".join(lines)


def _per_node(base: Phase, peer: Result, against: str = "memory broker") -> list[str]:
    """A cluster's fan-out per node against ``base`` (saturated phase; the memory broker's,
    or the same nodes' on memory brokers): the deliveries each CPU-second of the nodes
    gives, every node's CPU time summed, since the nodes share the server's CPU."""
    mine = peer.throughput.server_us_per_delivery if peer.throughput else None
    theirs = base.server_us_per_delivery
    if not mine or not theirs:
        return [
            f"{peer.server} per node: no CPU time measured for it or the {against} "
            "(a run shorter than a few clock ticks of /proc)"
        ]
    ratio = theirs / mine
    verdict = "met" if ratio >= PER_NODE_TARGET else "MISSED"
    return [
        f"{peer.server} per node: {mine} µs of node CPU per delivery ({peer.nodes} nodes' "
        f"CPU summed), {1e6 / mine:,.0f} deliveries per node CPU-second; {against} "
        f"{theirs} µs, {1e6 / theirs:,.0f}/CPU-second: x{ratio:.2f} of its fan-out per node "
        f"(target: at least x{PER_NODE_TARGET:.2f}, {verdict})"
    ]


def _check(args: argparse.Namespace) -> str:
    if args.subscribers < 1:
        return "--subscribers must be at least 1"
    if args.messages is not None and args.messages < 1:
        return "--messages must be at least 1"
    if args.publishers < 1 or args.depth < 1:
        return "--publishers and --depth must be at least 1"
    if args.size < 64 or args.size > 65535:
        return "--size must be 64..65535"
    if args.rate is not None and args.rate <= 0:
        return "--rate must be positive"
    if args.url and args.peer:
        return "--peer starts its own servers; it can't be combined with --url"
    return ""


def run_fanout(args: argparse.Namespace) -> int:
    """Run the bench; print the figures; 0 when every server delivered everything."""
    problem = _check(args)
    if problem:
        print(f"tidings bench: {problem}", file=sys.stderr)
        return 2
    messages = args.messages or max(50, min(5000, 2_000_000 // args.subscribers))
    try:
        raise_open_files(args.subscribers + args.publishers + 64)
    except BenchError as exc:
        print(f"tidings bench: {exc}", file=sys.stderr)
        return 2
    cpus = None if args.no_pin else _pin((args.server_cpu, args.client_cpu))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        results = asyncio.run(_bench_all(args, messages, cpus))
    else:
        results = uvloop.run(_bench_all(args, messages, cpus))
    print(report(results, args, messages, cpus is not None), flush=True)
    if args.json_path:
        data = {
            "command": sys.argv,
            "machine": _machine(),
            "messages": messages,
            "results": [asdict(r) for r in results],
        }
        with open(args.json_path, "w") as fh:
            json.dump(data, fh, indent=2)
    ok = all(
        not r.error and r.throughput and r.throughput.deliveries == r.throughput.expected
        for r in results
    )
    return 0 if ok else 1
