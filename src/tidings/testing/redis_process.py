"""One ``redis-server`` process on a free 127.0.0.1 port in its own temporary directory.

``RedisServer`` is documented in ``tidings.testing.redis``, which re-exports it.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from . import TIMEOUT
from .resp import RespConnection, RespError, parse_info
from .tls import TlsFiles, make_certificates

__all__ = [
    "REDIS_SERVER",
    "RedisProcessError",
    "RedisServer",
    "free_port",
    "redis_server",
    "redis_server_executable",
    "stop_all",
]

#: The binary, unless ``TIDINGS_REDIS_SERVER`` names another (Debian's by default).
REDIS_SERVER = "/usr/bin/redis-server"

# The machine's own Redis: never started, stopped or talked to by these helpers.
_RESERVED_PORTS = frozenset({6379, 16379, 26379})

# Processes still running when the interpreter exits (a test run that was interrupted)
# are killed then, so that no redis-server outlives its tests.
_RUNNING: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_RUNNING):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _RUNNING.clear()


class RedisProcessError(RuntimeError):
    """A ``redis-server`` that didn't start, didn't answer in time, or isn't installed.
    The message ends with the last lines of its log."""


def redis_server_executable() -> str:
    """The ``redis-server`` to run: ``$TIDINGS_REDIS_SERVER``, Debian's, or one on PATH."""
    configured = os.environ.get("TIDINGS_REDIS_SERVER")
    for candidate in (configured, REDIS_SERVER, shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RedisProcessError(
        "redis-server is not installed: run .ci/system-deps (Debian package redis-server) "
        "or set TIDINGS_REDIS_SERVER"
    )


def free_port(host: str = "127.0.0.1", *, avoid: Iterable[int] = ()) -> int:
    """A port nothing listens on now (the kernel's pick; never 6379 and its kin). Another
    process may take it before it is used: starters retry on "address in use"."""
    taken = _RESERVED_PORTS | set(avoid)
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            return port


def _quote(value: str | int) -> str:
    """A redis.conf argument, double-quoted so spaces and quotes survive (sdssplitargs)."""
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _poll_delays() -> Iterable[float]:
    """Short, growing pauses between polls of a process that is starting or stopping."""
    delay = 0.002
    while True:
        yield delay
        delay = min(delay * 2, 0.05)


class RedisServer:
    """A ``redis-server`` for tests: ``start()`` picks a free port on 127.0.0.1, writes a
    configuration into a new temporary directory, runs the server and returns once it
    answers ``PING``; ``close()`` stops it and removes the directory.

    - ``password`` alone sets ``requirepass``; with ``username`` an ACL user gets every
      permission and the ``default`` user is turned off (unauthenticated clients are refused).
    - ``tls``: only a TLS port (``rediss://``), with a certificate from a throwaway CA
      (``tls_files.ca_cert``); ``tls_client_auth`` also requires client certificates.
    - ``persistence``: an append-only file fsynced on every write, so a restart keeps the
      data; without it (the default) nothing is on disk and a restart loses everything.
    - ``replica_of``: ``(host, port)`` of a master to replicate.
    - ``config``: more ``redis.conf`` directives, written last (they win).

    ``stop()`` (``SIGTERM``, ``SIGKILL`` after a deadline) and ``start()`` again restart it on
    the same port; ``kill()`` sends ``SIGKILL``; ``pause()``/``resume()`` send
    ``SIGSTOP``/``SIGCONT`` (a hung server: connections open, nothing is answered). The
    ``a``-prefixed methods do the same without blocking an event loop. A ``RedisServer`` is a
    context manager, sync and async: it starts on entry and is closed on exit.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        username: str | None = None,
        tls: bool = False,
        tls_client_auth: bool = False,
        persistence: bool = False,
        replica_of: tuple[str, int] | None = None,
        config: Mapping[str, str | int] | None = None,
        executable: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if username is not None and password is None:
            raise ValueError("an ACL user needs a password")
        self.host = host
        self.password = password
        self.username = username
        self.tls = tls or tls_client_auth
        self.tls_client_auth = tls_client_auth
        self.persistence = persistence
        self.replica_of = replica_of
        self.config = dict(config or {})
        self.executable = executable
        self.directory: Path | None = None
        self.tls_files: TlsFiles | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.paused = False

    # --- where it is -------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisProcessError("the server was never started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        """``redis://`` (``rediss://`` with TLS), with the credentials when there are some."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.password is not None:
            user = quote(self.username or "", safe="")
            auth = f"{user}:{quote(self.password, safe='')}@"
        return f"{scheme}://{auth}{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self.directory / "redis.log" if self.directory else None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for redis-py (``Redis.from_url(server.url, **options)``): the
        CA to trust with TLS, and the client certificate when it is required."""
        if not self.tls:
            return {}
        assert self.tls_files is not None, "the server was never started"
        options: dict[str, Any] = {"ssl_ca_certs": str(self.tls_files.ca_cert)}
        if self.tls_client_auth:
            options["ssl_certfile"] = str(self.tls_files.client_cert)
            options["ssl_keyfile"] = str(self.tls_files.client_key)
        return options

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context for this server (None without TLS)."""
        if not self.tls:
            return None
        assert self.tls_files is not None, "the server was never started"
        return self.tls_files.client_context(client_cert=self.tls_client_auth)

    def connect(self, timeout: float = 1.0) -> RespConnection:
        """A small blocking connection, authenticated (``tidings.testing.resp``)."""
        return RespConnection(
            self.host,
            self.port,
            timeout=timeout,
            ssl_context=self.ssl_context(),
            username=self.username,
            password=self.password,
        )

    def command(self, *args: str | int, timeout: float = 1.0) -> Any:
        """Run one command on a new connection and return the reply."""
        with self.connect(timeout) as conn:
            return conn.command(*args)

    def info(self, section: str = "") -> dict[str, str]:
        """``INFO [section]`` as a mapping."""
        reply = self.command("INFO", section) if section else self.command("INFO")
        return parse_info(reply)

    # --- configuration -----------------------------------------------------------------
    def _config_lines(self) -> list[str]:
        assert self.directory is not None
        lines = [
            f"bind {self.host}",
            f"dir {_quote(str(self.directory))}",
            'logfile ""',  # stdout, which goes to redis.log
            "daemonize no",
            'save ""',
            "appendonly " + ("yes" if self.persistence else "no"),
            "appendfsync always",
            # A master sends replicas its data at once, not after the default 5 s.
            "repl-diskless-sync-delay 0",
            # SIGTERM doesn't wait 10 s for lagging replicas.
            "shutdown-timeout 1",
        ]
        if self.tls:
            files = self.tls_files
            assert files is not None
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {_quote(str(files.server_cert))}",
                f"tls-key-file {_quote(str(files.server_key))}",
                f"tls-ca-cert-file {_quote(str(files.ca_cert))}",
                "tls-auth-clients " + ("yes" if self.tls_client_auth else "no"),
                "tls-replication yes",
            ]
        else:
            lines.append(f"port {self.port}")
        if self.username is not None:
            assert self.password is not None
            rule = f">{self.password}"
            lines += [
                "user default off",
                f"user {_quote(self.username)} on {_quote(rule)} " + "~* &* +@all",
            ]
        elif self.password is not None:
            lines.append(f"requirepass {_quote(self.password)}")
        if self.replica_of is not None:
            host, port = self.replica_of
            lines.append(f"replicaof {host} {port}")
            if self.password is not None:
                lines.append(f"masterauth {_quote(self.password)}")
                if self.username is not None:
                    lines.append(f"masteruser {_quote(self.username)}")
        lines += [f"{key} {_quote(value)}" for key, value in self.config.items()]
        return lines

    def _command_line(self, config_path: Path) -> list[str]:
        return [self.executable or redis_server_executable(), str(config_path)]

    def _write_config(self) -> Path:
        assert self.directory is not None
        path = self.directory / "redis.conf"
        path.write_text("\n".join(self._config_lines()) + "\n")
        return path

    def _prepare(self) -> None:
        """Choose the directory and port on the first start."""
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="tidings-redis-"))
            if self.tls:
                self.tls_files = make_certificates(self.directory)
        if self._port is None:
            self._port = free_port(self.host)

    # --- life ------------------------------------------------------------------------
    def spawn(self) -> None:
        """Run the process without waiting for it to answer (``wait_ready`` does)."""
        if self.running:
            raise RedisProcessError(f"already running on port {self.port}")
        self._prepare()
        config_path = self._write_config()
        assert self.directory is not None
        if self._log is None:
            self._log = open(self.directory / "redis.log", "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(  # noqa: S603 - our own command line
            self._command_line(config_path),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        _RUNNING.add(self._proc)
        self.paused = False

    def wait_ready(self, timeout: float = TIMEOUT) -> None:
        """Return once the server answers ``PING``; raise ``RedisProcessError`` if it exits
        or stays silent for ``timeout`` seconds."""
        proc = self._proc
        assert proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        for delay in _poll_delays():
            if proc.poll() is not None:
                raise RedisProcessError(
                    f"redis-server on port {self.port} exited with {proc.returncode}"
                    + self._log_tail()
                )
            try:
                if self._ping():
                    return
            except (OSError, RespError):
                pass  # not listening yet, or still loading its data
            if time.monotonic() > deadline:
                raise RedisProcessError(
                    f"redis-server on port {self.port} didn't answer PING within {timeout} s"
                    + self._log_tail()
                )
            time.sleep(delay)

    def _ping(self) -> bool:
        with self.connect(timeout=0.5) as conn:
            return bool(conn.command("PING") == "PONG")

    def start(self, *, wipe: bool = False, timeout: float = TIMEOUT) -> None:
        """Start (again, on the same port) and wait until it answers. ``wipe`` first deletes
        what a previous run left on disk, so a server with ``persistence`` loses its data."""
        if wipe:
            self.wipe()
        first = self._port is None
        for attempt in range(5):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return
            except RedisProcessError:
                self._reap()
                # Another process took the port between the choice and the bind: choose
                # again, unless the port was already handed out (a restart keeps it).
                if first and attempt < 4 and self._port_was_taken():
                    self._port = None
                    continue
                raise

    def _port_was_taken(self) -> bool:
        path = self.log_path
        return path is not None and b"Address already in use" in path.read_bytes()[-4000:]

    def wipe(self) -> None:
        """Delete the data files (RDB, AOF) of a stopped server; keep its configuration."""
        if self.running:
            raise RedisProcessError("stop the server before wiping its data")
        if self.directory is None:
            return
        for name in ("dump.rdb", "appendonly.aof"):
            (self.directory / name).unlink(missing_ok=True)
        shutil.rmtree(self.directory / "appendonlydir", ignore_errors=True)

    def stop(self, timeout: float = 5.0) -> None:
        """``SIGTERM`` (after ``SIGCONT`` if paused), then ``SIGKILL`` if it hasn't exited
        within ``timeout`` seconds. Returns once the process is gone."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return
        if self.paused:
            self.resume()
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
        self._reap()

    def kill(self) -> None:
        """``SIGKILL``: gone at once, nothing saved, clients cut off."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._reap()

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            proc.wait()
            _RUNNING.discard(proc)
        self.paused = False

    def pause(self) -> None:
        """``SIGSTOP``: the server holds its connections and answers nothing."""
        if not self.running:
            raise RedisProcessError("not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """``SIGCONT`` after ``pause``: it answers what it was sent meanwhile."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self, *, wipe: bool = False) -> None:
        """``stop()`` then ``start()`` on the same port."""
        self.stop()
        self.start(wipe=wipe)

    def close(self) -> None:
        """Stop it and remove its directory."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _log_tail(self, lines: int = 15) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        tail = path.read_bytes().decode(errors="replace").splitlines()[-lines:]
        return "; its log ends:\n" + "\n".join(tail)

    # --- the same without blocking an event loop ----------------------------------------
    async def astart(self, *, wipe: bool = False) -> None:
        await asyncio.to_thread(self.start, wipe=wipe)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def arestart(self, *, wipe: bool = False) -> None:
        await asyncio.to_thread(self.restart, wipe=wipe)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # --- context managers ------------------------------------------------------------
    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> RedisServer:
        try:
            await self.astart()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = f"port {self._port}" if self._port else "not started"
        return f"<RedisServer {where}{' running' if self.running else ''}>"


def stop_all(servers: Iterable[RedisServer], timeout: float = 5.0) -> None:
    """Close several servers at once: ``SIGTERM`` to all, then wait for each (``SIGKILL``
    for those still there after ``timeout`` seconds), then remove their directories."""
    servers = list(servers)
    for server in servers:
        proc = server._proc
        if proc is not None and proc.poll() is None:
            if server.paused:
                server.resume()
            proc.terminate()
    deadline = time.monotonic() + timeout
    for server in servers:
        proc = server._proc
        if proc is not None:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        server.close()


def redis_server(**options: Any) -> RedisServer:
    """A ``RedisServer`` (not started): ``with redis_server() as srv:`` or
    ``async with redis_server(password="s") as srv:``; ``srv.url`` is where it listens."""
    return RedisServer(**options)
