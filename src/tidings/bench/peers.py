"""Servers under test for ``tidings bench fanout``: tidings itself, peers, or a running URL.

Each is started as its own process pinned to one CPU, listening on a free loopback port
(chosen by the OS where the server can say which it got), and described by a ``Target``:
where subscribers connect, where to publish, where to read the subscriber count, and which
process to measure (RSS and CPU time from ``/proc``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "NCHAN_CONF",
    "NCHAN_MODULES",
    "BenchError",
    "Helper",
    "Target",
    "cpu_seconds",
    "cpu_times",
    "find_worker",
    "free_port",
    "nchan_available",
    "raise_open_files",
    "remote_target",
    "rss_kib",
    "start_asgi_peer",
    "start_durable",
    "start_nchan",
    "start_tidings",
    "start_websockets_peer",
    "subscriber_count",
    "subscriber_counts",
    "wait_ready",
]

NCHAN_MODULES = ("/usr/lib/nginx/modules/ngx_nchan_module.so",)


class BenchError(Exception):
    """The bench can't go on; the message says why."""


@dataclass
class Helper:
    """A process of the run other than the server under test (Redis, a node that only
    publishes), measured so that its CPU is reported and not taken for other work."""

    name: str
    pid: int
    cpu: int | None  # the CPU it is pinned to


@dataclass
class Target:
    """One server under test."""

    name: str
    host: str
    port: int
    sub_path: str
    pub_port: int
    pub_path: str
    pub_headers: dict[str, str] = field(default_factory=dict)
    info_headers: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None  # the process to measure (nginx: its worker)
    log: Path | None = None
    # What the process prints once it listens; groups: its port, then the publish port.
    announce: re.Pattern[str] | None = None
    # Another server publishes go to (a second node on the same broker), and what to stop
    # with this one (that node, the Redis server).
    pub_target: Target | None = None
    companions: list[Any] = field(default_factory=list)
    # More nodes serving subscribers with this one (a cluster on one broker): subscribers
    # are split over all of them, publishers go round-robin over them, and the server's
    # figures are their sums. Each is also in ``companions``.
    nodes: list[Target] = field(default_factory=list)
    helpers: list[Helper] = field(default_factory=list)
    cpu: int | None = None  # the CPU the server (every node) is pinned to
    cluster: bool = False  # a redis-nodes=N peer: report each node and the per-node target
    # Nodes that share no broker (memory-nodes=N): every message is published to each.
    fan_publish: bool = False
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def log_tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    @property
    def all_nodes(self) -> list[Target]:
        """The processes serving subscribers: this one and ``nodes``."""
        return [self, *self.nodes]

    def check_alive(self) -> None:
        for node in [*self.all_nodes, *([self.pub_target] if self.pub_target else [])]:
            if node.process is not None and node.process.poll() is not None:
                raise BenchError(
                    f"{node.name} exited with status {node.process.returncode}\n{node.log_tail()}"
                )

    def stop(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        for companion in self.companions:
            companion.stop()
        self.companions.clear()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def raise_open_files(needed: int) -> None:
    """Lift this process's open-file limit to the hard one; ``BenchError`` when even that
    is below ``needed``."""
    import resource  # here: the bench needs Linux, but the CLI imports this module anywhere

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        raise BenchError(f"{needed} open files needed but the hard limit is {hard}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as fh:
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> dict[int, tuple[float, float, float, float]]:
    """Per CPU, seconds so far: (processes, interrupts, stolen, everything) from /proc/stat.

    Interrupt time (irq + softirq) is where the kernel spends much of loopback TCP without
    charging any process; processes' time on the CPU beyond the one under test tells that
    something else shared it; steal is time the hypervisor gave the virtual CPU to another
    guest, which slows every figure of the run without showing in any process."""
    tick = os.sysconf("SC_CLK_TCK")
    result = {}
    with open("/proc/stat") as fh:
        for line in fh:
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or name == "cpu":
                continue
            # user nice system idle iowait irq softirq steal
            v = [int(x) for x in rest.split()[:8]]
            result[int(name[3:])] = (
                (v[0] + v[1] + v[2]) / tick,
                (v[5] + v[6]) / tick,
                v[7] / tick,
                sum(v) / tick,
            )
    return result


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def _pinned(cmd: list[str], cpu: int | None) -> list[str]:
    taskset = shutil.which("taskset")
    if cpu is None or taskset is None:
        return cmd
    return [taskset, "-c", str(cpu), *cmd]


def _spawn(
    name: str,
    cmd: list[str],
    cpu: int | None,
    env: dict[str, str] | None = None,
    tmp: tempfile.TemporaryDirectory[str] | None = None,
) -> tuple[subprocess.Popen[bytes], tempfile.TemporaryDirectory[str], Path]:
    if tmp is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"tidings-bench-{name}-")
    log = Path(tmp.name) / "output.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own command line, not user input
            _pinned(cmd, cpu),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=tmp.name,
        )
    if cpu is not None and shutil.which("taskset") is None:
        os.sched_setaffinity(proc.pid, {cpu})
    return proc, tmp, log


async def wait_ready(target: Target, within: float = 30.0) -> None:
    """Wait until the target listens; learn its ports from what it prints, if it does."""
    deadline = time.monotonic() + within
    pattern = target.announce
    if pattern is not None and target.log is not None:
        while True:
            target.check_alive()
            found = pattern.search(target.log.read_text(errors="replace"))
            if found is not None:
                target.port = int(found.group(1))
                groups = found.groups()
                target.pub_port = int(groups[1]) if len(groups) > 1 else target.port
                break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{target.name} didn't start in {within:.0f} s\n{target.log_tail()}"
                )
            await asyncio.sleep(0.05)
    for port in sorted({target.port, target.pub_port}):
        while True:
            target.check_alive()
            try:
                _, writer = await asyncio.open_connection(target.host, port)
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{target.name} not listening on {port} after {within:.0f} s\n"
                        f"{target.log_tail()}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break


def start_tidings(
    channel: str,
    api_key: str,
    subscribers: int,
    cpu: int | None,
    broker: str = "",
    name: str = "tidings",
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Target:
    """``tidings serve`` on a free port with a known API key (on ``broker`` if given; more
    ``args``, ``env``)."""
    cmd = [sys.executable, "-m", "tidings.cli", "serve", "--port", "0"]
    cmd += [
        "--host",
        "127.0.0.1",
        f"--api-key={api_key}",
        "--log-level",
        "warning",
        *args,
    ]  # a key may start with "-"
    env = {
        "TIDINGS_MAX_CONNECTIONS": str(subscribers + 256),
        # No heartbeat pings during a run: the byte count assumes data frames only.
        "TIDINGS_PING_INTERVAL": "3600",
        **(env or {}),
    }
    if broker:
        env["TIDINGS_BROKER"] = broker
    proc, tmp, log = _spawn("tidings", cmd, cpu, env)
    return _tidings_target(name, channel, api_key, proc, tmp, log)


def _tidings_target(
    name: str,
    channel: str,
    api_key: str,
    proc: subprocess.Popen[bytes],
    tmp: tempfile.TemporaryDirectory[str],
    log: Path,
) -> Target:
    """A process serving tidings' endpoints that prints ``serving on http://HOST:PORT``."""
    return Target(
        name=name,
        host="127.0.0.1",
        port=0,
        sub_path=f"/ws/{channel}?format=raw",
        pub_port=0,
        pub_path=f"/pub/{channel}",
        pub_headers={"X-API-Key": api_key},
        info_headers={"X-API-Key": api_key},
        process=proc,
        pid=proc.pid,
        log=log,
        announce=re.compile(r"serving on http://[^\s/]+:(\d+)"),
        _tmp=tmp,
    )


def start_durable(channel: str, api_key: str, subscribers: int, cpu: int | None) -> Target:
    """``tidings serve`` with durable history: a SQLite file in its temporary directory."""
    return start_tidings(
        channel,
        api_key,
        subscribers,
        cpu,
        name="tidings-sqlite",
        args=("--history-path", "history.db"),
    )


def start_asgi_peer(channel: str, subscribers: int, cpu: int | None) -> Target:
    """``tidings.asgi`` under uvicorn (peer_asgi): the same endpoints as tidings."""
    api_key = secrets.token_urlsafe(12)
    cmd = [sys.executable, "-m", "tidings.bench.peer_asgi", f"--api-key={api_key}"]
    cmd.append(f"--max-connections={subscribers + 256}")
    proc, tmp, log = _spawn("asgi", cmd, cpu)
    return _tidings_target("asgi", channel, api_key, proc, tmp, log)


def start_websockets_peer(channel: str, cpu: int | None) -> Target:
    """The ``websockets`` library's asyncio server with ``broadcast()`` (peer_websockets)."""
    cmd = [sys.executable, "-m", "tidings.bench.peer_websockets"]
    proc, tmp, log = _spawn("websockets", cmd, cpu)
    return Target(
        name="websockets",
        host="127.0.0.1",
        port=0,
        sub_path=f"/ws/{channel}",
        pub_port=0,
        pub_path=f"/pub/{channel}",
        process=proc,
        pid=proc.pid,
        log=log,
        announce=re.compile(r"listening (\d+) (\d+)"),
        _tmp=tmp,
    )


NCHAN_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile {nofile};
load_module {module};
events {{
    worker_connections {connections};
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ ^/pub/(.+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
            nchan_message_buffer_length 100;
            nchan_message_timeout 600s;
        }}
        location ~ ^/ws/(.+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
        }}
    }}
}}
"""


def nchan_available() -> str:
    """Why nginx+Nchan can't run here, or "" when it can."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx not installed (apt-get install nginx-light libnginx-mod-nchan)"
    if not any(Path(m).exists() for m in NCHAN_MODULES):
        return "the Nchan module is not installed (apt-get install libnginx-mod-nchan)"
    return ""


def start_nchan(channel: str, subscribers: int, cpu: int | None) -> Target:
    """nginx with one worker and the Nchan module, configured in a temporary directory."""
    missing = nchan_available()
    if missing:
        raise BenchError(missing)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    module = next(m for m in NCHAN_MODULES if Path(m).exists())
    port = free_port()
    tmp = tempfile.TemporaryDirectory(prefix="tidings-bench-nchan-")
    conf = Path(tmp.name) / "nginx.conf"
    import resource  # here: the bench needs Linux, but the CLI imports this module anywhere

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    conf.write_text(
        NCHAN_CONF.format(
            dir=tmp.name,
            module=module,
            port=port,
            nofile=hard,
            # One slot per subscriber is not enough: nginx warns and reuses connections.
            connections=2 * subscribers + 256,
        )
    )
    proc, tmp, _ = _spawn("nchan", [nginx, "-p", tmp.name, "-c", str(conf)], cpu, tmp=tmp)
    return Target(
        name="nchan",
        host="127.0.0.1",
        port=port,
        sub_path=f"/ws/{channel}",
        pub_port=port,
        pub_path=f"/pub/{channel}",
        info_headers={"Accept": "application/json"},
        process=proc,
        pid=None,  # the worker, found once it listens (see find_worker)
        log=Path(tmp.name) / "error.log",
        _tmp=tmp,
    )


def find_worker(target: Target) -> None:
    """nginx serves from its worker process: measure that one."""
    assert target.process is not None
    workers = _children(target.process.pid)
    if len(workers) != 1:
        raise BenchError(f"expected one nginx worker, found {len(workers)}")
    target.pid = workers[0]


def remote_target(url: str, channel: str, api_key: str, pid: int | None) -> Target:
    """A tidings server already running at ``url`` (measured only if ``pid`` is given)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname:
        raise BenchError(f"--url must be http://HOST:PORT, got {url!r}")
    host = parts.hostname
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise BenchError("the bench only targets loopback addresses (127.0.0.0/8, ::1)")
    port = parts.port or 80
    return Target(
        name="tidings",
        host=host,
        port=port,
        sub_path=f"/ws/{channel}?format=raw",
        pub_port=port,
        pub_path=f"/pub/{channel}",
        pub_headers={"X-API-Key": api_key},
        info_headers={"X-API-Key": api_key},
        pid=pid,
    )


_SUBSCRIBERS = re.compile(rb"subscribers:\s*(\d+)")
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


async def subscriber_count(target: Target) -> int:
    """The servers' own count of subscribers to the bench channel: the sum of what each
    node serving subscribers says it holds."""
    return sum(await subscriber_counts(target))


async def subscriber_counts(target: Target) -> list[int]:
    """Each node's own count of its subscribers to the bench channel, in ``all_nodes``
    order (asked of each node on its own port, not of whichever answers)."""
    return [await _node_count(node) for node in target.all_nodes]


async def _node_count(target: Target) -> int:
    # Asked of the node the subscribers are on, where publishes go through another.
    port = target.port if target.pub_target is not None else target.pub_port
    reader, writer = await asyncio.open_connection(target.host, port)
    try:
        headers = "".join(f"{k}: {v}\r\n" for k, v in target.info_headers.items())
        writer.write(
            f"GET {target.pub_path} HTTP/1.1\r\nHost: {target.host}\r\n{headers}"
            "Connection: close\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
        length = _LENGTH.search(head)
        if length is not None:
            body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), 10.0)
        else:
            body = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
    status = head[9:12]
    if status == b"404":  # Nchan: no such channel yet
        return 0
    if status != b"200":
        raise BenchError(f"{target.name}: GET {target.pub_path} -> {head[:80]!r}")
    try:
        count = json.loads(body)["subscribers"]
    except (ValueError, KeyError, TypeError):
        found = _SUBSCRIBERS.search(body)
        if found is None:
            raise BenchError(f"{target.name}: no subscriber count in {body[:200]!r}") from None
        count = found.group(1)
    return int(count)
