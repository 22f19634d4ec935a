"""``tidings serve --workers N``: N worker processes on one port, watched by a supervisor.

**Theory of operation.** The supervisor (the process ``tidings serve`` started) reserves the
port, forks the workers and then only watches them; it never serves a request.

- *One port, many listeners.* Every worker opens its own listening socket on the port with
  ``SO_REUSEPORT``, and the kernel spreads new connections over them by a hash of the
  connection's addresses. We chose that over one socket bound by the supervisor and shared
  by every worker: with a shared socket each worker's event loop races to ``accept`` and the
  most recently idle one tends to win, so long-lived connections (all of ours) pile up on
  one or two workers; with ``SO_REUSEPORT`` each worker gets an even share and nobody
  contends for one accept queue. The price: connections still waiting in the accept queue
  of a worker that dies are reset (their clients reconnect, as they would anyway). The
  supervisor holds a socket *bound* to the port with ``SO_REUSEPORT`` but never listening:
  it gets no connections, it resolves port 0 to one real port for all workers, and it keeps
  the port reserved while workers come and go. Linux lets only processes of the same user
  join a ``SO_REUSEPORT`` group.
- *Ready, or failed at start.* A worker says it is ready by writing a byte to a pipe once it
  listens. One that exits before that failed at start; when ``max_start_failures`` starts
  in a row fail (no worker became ready in between), the supervisor stops and exits 1.
- *Restarts.* A worker that exits is started again after a pause that doubles with each
  quick death of that worker (``backoff``, up to ``max_backoff``) and starts again from the
  shortest once it stayed up ``stable_after`` seconds: a crash loop doesn't spin.
- *Stopping.* On SIGTERM or SIGINT every worker gets SIGTERM and shuts down gracefully
  (its clients are told); those still running after ``stop_timeout`` get SIGKILL. A second
  signal kills them at once. Exit code 0.
- *The supervisor dies.* Each worker holds the read end of a pipe whose write end only the
  supervisor holds; when the supervisor is gone, even by SIGKILL, the pipe ends and the
  workers shut down instead of serving on unsupervised.

``Supervisor`` knows nothing of tidings: it runs ``target(worker)`` in each child. The
tidings part is ``serve_workers(config)``; every worker is a node of its own (named
``<host>-<pid>``), so they need a shared broker (``Config.validate`` refuses the memory
broker with more than one worker).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidings.config import Config

__all__ = ["Supervisor", "Worker", "describe_exit", "reserve_port", "serve_workers"]

log = logging.getLogger("tidings.workers")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class Worker:
    """What a worker process knows of its supervisor: its slot ``index`` (0 to N-1),
    ``ready()`` to call once it serves, and ``lifeline``, a file descriptor that becomes
    readable (end of file) when the supervisor is gone."""

    index: int
    lifeline: int
    _ready_fd: int

    def ready(self) -> None:
        """Tell the supervisor this worker serves (once; later calls do nothing)."""
        if self._ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._ready_fd, b"R")
            os.close(self._ready_fd)
            self._ready_fd = -1


@dataclass
class _Slot:
    index: int
    pid: int = 0
    ready_fd: int = -1  # the supervisor's read end of the ready pipe
    ready: bool = False
    started: float = 0.0
    deaths: int = 0  # quick deaths in a row: the exponent of the backoff
    restart_at: float | None = None
    killed_late: bool = False


def describe_exit(status: int) -> str:
    """A ``waitpid`` status in words: ``exit code 3``, ``killed by SIGKILL``."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    """Runs ``count`` children, each ``target(worker)`` (its return value is the child's exit
    code), restarts those that exit, and stops them all on SIGTERM/SIGINT.

    ``run()`` blocks until everything stopped and returns the exit code for the
    supervisor: 0 after a signal, 1 when workers kept failing at start. ``on_ready`` is
    called once, when every worker has become ready for the first time; ``in_child`` first
    thing in each child (to close what a worker mustn't hold). Call ``run()`` from a process
    without threads or a running event loop: it forks.
    """

    def __init__(
        self,
        count: int,
        target: Callable[[Worker], int],
        *,
        stop_timeout: float = 10.0,
        start_timeout: float = 60.0,
        backoff: float = 0.1,
        max_backoff: float = 30.0,
        stable_after: float = 10.0,
        max_start_failures: int = 5,
        on_ready: Callable[[], None] | None = None,
        in_child: Callable[[], None] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self.count = count
        self.target = target
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.max_start_failures = max_start_failures
        self.on_ready = on_ready
        self.in_child = in_child
        self.slots = [_Slot(i) for i in range(count)]
        self.start_failures = 0
        self.exit_code = 0
        self._announced = False
        self._stopping_since: float | None = None
        self._wakeup_r = self._wakeup_w = -1
        self._lifeline_r = self._lifeline_w = -1

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> int:
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        self._lifeline_r, self._lifeline_w = os.pipe()
        previous = {sig: signal.getsignal(sig) for sig in (*_STOP_SIGNALS, signal.SIGCHLD)}
        old_wakeup = signal.set_wakeup_fd(self._wakeup_w)
        # The handlers do nothing: the C handler writes the signal's number to the wakeup
        # pipe, and the loop below reads it from there.
        for sig in previous:
            signal.signal(sig, _note_signal)
        try:
            for slot in self.slots:
                self._spawn(slot)
            while self._alive() or self._stopping_since is None:
                self._step()
        finally:
            # Only after a failure of the supervisor itself are workers left: none outlives it.
            for slot in self._alive():
                self._signal(slot, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(slot.pid, 0)
                slot.pid = 0
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
            for fd in (self._wakeup_r, self._wakeup_w, self._lifeline_r, self._lifeline_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            for slot in self.slots:
                self._close_ready(slot)
        return self.exit_code

    def _alive(self) -> list[_Slot]:
        return [slot for slot in self.slots if slot.pid]

    def _step(self) -> None:
        now = time.monotonic()
        waiting = [slot.ready_fd for slot in self.slots if slot.ready_fd >= 0]
        readable, _, _ = select.select([self._wakeup_r, *waiting], [], [], self._timeout(now))
        if self._wakeup_r in readable:
            self._signals()
        for slot in self.slots:
            if slot.ready_fd >= 0 and slot.ready_fd in readable:
                self._read_ready(slot)
        self._reap()
        self._deadlines(time.monotonic())

    def _timeout(self, now: float) -> float:
        deadlines = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        deadlines += [
            slot.started + self.start_timeout
            for slot in self.slots
            if slot.pid and not slot.ready and self._stopping_since is None
        ]
        if self._stopping_since is not None:
            deadlines.append(self._stopping_since + self.stop_timeout)
        # Also wake now and then: a SIGCHLD that raced the select is then seen anyway.
        return max(0.0, min([now + 1.0, *deadlines]) - now)

    def _signals(self) -> None:
        try:
            received = os.read(self._wakeup_r, 512)
        except BlockingIOError:
            return
        for number in received:
            if number in _STOP_SIGNALS:
                if self._stopping_since is None:
                    log.info("stopping %d workers (%s)", self.count, signal.Signals(number).name)
                    self.stop()
                else:
                    log.warning("second %s: killing the workers", signal.Signals(number).name)
                    self._kill_all()

    def _read_ready(self, slot: _Slot) -> None:
        try:
            data = os.read(slot.ready_fd, 16)
        except OSError:
            data = b""
        self._close_ready(slot)
        if data and slot.pid:
            slot.ready = True
            self.start_failures = 0
            log.debug("worker %d (pid %d) is ready", slot.index, slot.pid)
            if not self._announced and all(s.ready for s in self.slots):
                self._announced = True
                if self.on_ready is not None:
                    self.on_ready()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is not None:
                self._exited(slot, status)

    def _exited(self, slot: _Slot, status: int) -> None:
        if slot.ready_fd >= 0:
            self._read_ready(slot)  # a byte written just before dying still counts
        pid, how = slot.pid, describe_exit(status)
        slot.pid = 0
        if self._stopping_since is not None:
            level = logging.WARNING if os.WIFSIGNALED(status) else logging.INFO
            log.log(level, "worker %d (pid %d) stopped: %s", slot.index, pid, how)
            return
        now = time.monotonic()
        if not slot.ready:
            self.start_failures += 1
            log.error("worker %d (pid %d) failed to start: %s", slot.index, pid, how)
            if self.start_failures >= self.max_start_failures:
                print(
                    f"tidings: workers keep failing at start ({self.start_failures} times in a "
                    f"row, the last with {how}): stopping. The workers' messages above say why.",
                    file=sys.stderr,
                    flush=True,
                )
                self.exit_code = 1
                self.stop()
                return
        if now - slot.started >= self.stable_after:
            slot.deaths = 0
        delay = min(self.max_backoff, self.backoff * 2 ** min(slot.deaths, 30))
        slot.deaths += 1
        slot.restart_at = now + delay
        if slot.ready:
            log.warning(
                "worker %d (pid %d) exited (%s); restarting it in %.1f s",
                slot.index,
                pid,
                how,
                delay,
            )

    def _deadlines(self, now: float) -> None:
        if self._stopping_since is not None:
            if now >= self._stopping_since + self.stop_timeout:
                left = self._alive()
                if left and not any(slot.killed_late for slot in left):
                    log.warning(
                        "%d workers still running %g s after SIGTERM: SIGKILL",
                        len(left),
                        self.stop_timeout,
                    )
                self._kill_all()
            return
        for slot in self.slots:
            if slot.restart_at is not None and now >= slot.restart_at:
                slot.restart_at = None
                self._spawn(slot)
            elif slot.pid and not slot.ready and now >= slot.started + self.start_timeout:
                log.error(
                    "worker %d (pid %d) not ready after %g s: killing it",
                    slot.index,
                    slot.pid,
                    self.start_timeout,
                )
                self._signal(slot, signal.SIGKILL)

    def stop(self) -> None:
        """Begin stopping: SIGTERM to every worker, no more restarts."""
        if self._stopping_since is not None:
            return
        self._stopping_since = time.monotonic()
        for slot in self.slots:
            slot.restart_at = None
            self._signal(slot, signal.SIGTERM)

    def _kill_all(self) -> None:
        for slot in self._alive():
            slot.killed_late = True
            self._signal(slot, signal.SIGKILL)

    def _signal(self, slot: _Slot, sig: signal.Signals) -> None:
        if slot.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, sig)

    def _close_ready(self, slot: _Slot) -> None:
        if slot.ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(slot.ready_fd)
            slot.ready_fd = -1

    # --- a child -----------------------------------------------------------------------
    def _spawn(self, slot: _Slot) -> None:
        ready_r, ready_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns here
            self._child(slot, ready_r, ready_w)
        os.close(ready_w)
        slot.pid, slot.ready_fd, slot.ready = pid, ready_r, False
        slot.started = time.monotonic()
        log.debug("worker %d started: pid %d", slot.index, pid)

    def _child(self, slot: _Slot, ready_r: int, ready_w: int) -> None:  # pragma: no cover
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            # Hold nothing of the supervisor's but the lifeline's read end.
            inherited = [ready_r, self._wakeup_r, self._wakeup_w, self._lifeline_w]
            inherited += [s.ready_fd for s in self.slots if s.ready_fd >= 0]
            for fd in inherited:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self.in_child is not None:
                self.in_child()
            code = int(self.target(Worker(slot.index, self._lifeline_r, ready_w)) or 0)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def _note_signal(number: int, frame: object) -> None:
    """Nothing: the signal number is already in the wakeup pipe."""


# --- tidings' workers ------------------------------------------------------------------


def reserve_port(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Bind (and never listen on) ``SO_REUSEPORT`` sockets for every address of ``host``
    at ``port``; port 0 becomes the port the kernel picks for the first address, shared by
    the others. Returns the sockets and the port. Raises ``OSError``."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    # One socket per distinct address, as asyncio's create_server binds them.
    addresses = dict.fromkeys((family, address) for family, _, _, _, address in infos)
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            # The options asyncio's create_server(reuse_port=True) gives the workers'
            # sockets: a group's members must agree on them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            if port == 0:
                port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets, port


def serve_workers(config: Config, announce: Callable[[str], None]) -> int:
    """Run ``config.workers`` tidings workers on ``config.host:config.port``; return the exit
    code. ``announce(url)`` is called once every worker serves."""
    if not hasattr(socket, "SO_REUSEPORT") or not hasattr(os, "fork"):
        print("tidings: --workers needs SO_REUSEPORT and fork (Linux)", file=sys.stderr)
        return 2
    try:
        reserved, port = reserve_port(config.host, config.port)
    except OSError as exc:
        print(f"tidings: can't listen on {config.host}:{config.port}: {exc.strerror}", flush=True)
        return 1
    worker_config = dataclasses.replace(config, port=port, reuse_port=True)
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}"

    def close_reserved() -> None:
        for sock in reserved:
            sock.close()

    # Imported before forking: every worker shares these pages instead of importing anew.
    import tidings.server  # noqa: F401

    supervisor = Supervisor(
        config.workers,
        lambda worker: _worker_main(worker_config, worker),
        stop_timeout=config.shutdown_timeout + 5.0,
        on_ready=lambda: announce(url),
        in_child=close_reserved,
    )
    try:
        return supervisor.run()
    finally:
        close_reserved()


def _worker_main(config: Config, worker: Worker) -> int:  # pragma: no cover - a child
    import asyncio

    coro = _serve_worker(config, worker)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        return asyncio.run(coro)
    return int(uvloop.run(coro))


async def _serve_worker(config: Config, worker: Worker) -> int:  # pragma: no cover - a child
    import asyncio

    from tidings.exceptions import BrokerError
    from tidings.server import Server

    server = Server(config)
    try:
        await server.start()
    except (OSError, BrokerError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(
            f"tidings: worker {worker.index} (pid {os.getpid()}) can't start: {what}",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(Exception):
            await server.aclose()
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    # The supervisor is gone (the lifeline's write end closed): stop rather than serve on.
    loop.add_reader(worker.lifeline, stop.set)
    worker.ready()
    log.info("worker %d (pid %d, node %s) serving", worker.index, os.getpid(), server.app.node.name)
    await stop.wait()
    loop.remove_reader(worker.lifeline)
    # Bounded like the supervisor's wait, which an orphaned worker no longer has. Past it,
    # exit at once: a task that doesn't end when cancelled would hang asyncio.run's
    # cleanup too.
    limit = config.shutdown_timeout + 5.0
    closing = asyncio.ensure_future(server.aclose())
    done, _ = await asyncio.wait({closing}, timeout=limit)
    if not done:
        log.error(
            "worker %d (pid %d): shutdown not done after %g s", worker.index, os.getpid(), limit
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    closing.result()
    return 0
