"""A small blocking RESP2 client: enough to wait for, configure and inspect the
``redis-server`` processes that ``tidings.testing.redis`` starts, without redis-py.

It sends commands as arrays of bulk strings and reads the five RESP2 reply types
(https://redis.io/docs/latest/develop/reference/protocol-spec/): simple strings, errors,
integers, bulk strings and arrays. Replies come back as ``str``, ``int``, ``None`` or lists;
an error reply raises ``RespError``.
"""

from __future__ import annotations

import socket
import ssl
from types import TracebackType
from typing import Any

from tidings.protocol.resp import encode_command

__all__ = ["RespConnection", "RespError", "parse_info"]


class RespError(Exception):
    """The server answered a command with an error reply (``-ERR ...``): the text is in
    ``args[0]``, its first word (``ERR``, ``NOAUTH``, ``LOADING``…) in ``code``."""

    @property
    def code(self) -> str:
        return str(self.args[0]).split(" ", 1)[0]


class RespConnection:
    """One connection to a Redis server; ``command(*args)`` sends and waits for the reply.

    Every read and write is bounded by ``timeout`` (seconds): a stopped (``SIGSTOP``) server
    raises ``TimeoutError`` instead of hanging. Connection failures raise ``OSError``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._file = sock.makefile("rb")
        try:
            if password is not None:
                auth = (username, password) if username else (password,)
                self.command("AUTH", *auth)
        except BaseException:
            self.close()
            raise

    def command(self, *args: str | bytes | int) -> Any:
        self._sock.sendall(encode_command(*args))
        return self._read()

    def _read(self) -> Any:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by the server")
        kind, rest = line[:1], line[1:-2].decode()
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._file.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionError("connection closed by the server")
            return data[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._read() for _ in range(count)]
        raise ConnectionError(f"not a RESP2 reply: {line[:40]!r}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> RespConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` or ``CLUSTER INFO`` text as a mapping of its ``key:value`` lines."""
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            result[key.strip()] = value.strip()
    return result
