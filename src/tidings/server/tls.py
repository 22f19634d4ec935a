"""TLS for the native listener: the server's ``ssl.SSLContext`` from ``certfile``/``keyfile``.

HTTP/1.1 only (ALPN ``http/1.1``, RFC 7301): a client offering HTTP/2 falls back to it, and
``wss://`` is the WebSocket handshake over it. TLS 1.2 is the oldest version accepted (RFC
9325 §3.1.1); ciphers are the ``ssl`` module's defaults for servers.
"""

from __future__ import annotations

import ssl

from tidings.exceptions import ConfigError

__all__ = ["server_context"]


def _no_passphrase() -> str:
    # Asked for by an encrypted key: a server must not stop at start-up to prompt.
    raise ConfigError("keyfile is encrypted: tidings needs an unencrypted key file")


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """The context for ``loop.create_server(ssl=...)``; ``ConfigError`` naming the file when
    a file can't be read or the certificate and key don't make a pair."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    for name, path in (("certfile", certfile), ("keyfile", keyfile)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{name}: can't read {path}: {exc.strerror}") from None
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"certfile {certfile} and keyfile {keyfile}: not a PEM certificate and its "
            f"private key ({exc.reason or exc})"
        ) from None
    return context
