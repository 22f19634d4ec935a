"""The ``tidings`` command: serve, publish, subscribe, token, genconfig, checkconfig, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from tidings.config import Config, genconfig, is_loopback_host, load_config
from tidings.exceptions import BrokerError, ConfigError, TidingsError
from tidings.server.logs import configure_logging

__all__ = [
    "DEFAULT_URL",
    "HS256_KEY_BYTES",
    "build_parser",
    "cmd_bench",
    "cmd_bench_attack",
    "cmd_bench_chat",
    "cmd_bench_publish",
    "cmd_checkconfig",
    "cmd_genconfig",
    "cmd_publish",
    "cmd_serve",
    "cmd_subscribe",
    "cmd_token",
    "demo_warning",
    "main",
    "serve_config",
]

DEFAULT_URL = "http://127.0.0.1:8000"
HS256_KEY_BYTES = 32


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        return asyncio.run(coro)
    return uvloop.run(coro)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(
            args.config,
            overrides={
                "host": args.host,
                "port": args.port,
                "api_key": args.api_key,
                "log_level": args.log_level,
                "demo": True if args.demo else None,
                "demo_public": True if args.demo_public else None,
                "allowed_origins": args.allowed_origin or None,
                "reuse_port": True if args.reuse_port else None,
                "broker": args.broker,
                "history_path": args.history_path,
                "workers": args.workers,
                "certfile": args.certfile,
                "keyfile": args.keyfile,
                "hooks": args.hooks or None,
            },
        )
    except ConfigError as exc:
        _config_error(exc)
        return 2
    return serve_config(config)


def serve_config(config: Config) -> int:
    """Run a server for ``config`` until SIGINT/SIGTERM (``tidings serve``, and
    ``manage.py tidings``); the exit status."""
    if config.hook_modules() and os.getcwd() not in sys.path:
        # As `python -m` would: hook modules are found from where the server starts.
        sys.path.insert(0, os.getcwd())
    warning = demo_warning(config)
    if warning:
        print(f"tidings: warning: {warning}", file=sys.stderr, flush=True)
    configure_logging(config.log_level, config.log_format)
    generated = not config.api_key
    if generated:
        config.api_key = secrets.token_urlsafe(18)
    _raise_open_files_limit()
    if config.workers > 1:
        from tidings.workers import serve_workers

        code = serve_workers(config, lambda url: _banner(config, url, generated))
        if code == 0:
            print("tidings: stopped", flush=True)
        return code
    return int(_run(_serve(config, generated)) or 0)


def _config_error(exc: ConfigError) -> None:
    # One line, whatever the message holds (a TOML parser's, a file name).
    text = " ".join(str(exc).split())
    print(f"tidings: configuration error: {text}", file=sys.stderr, flush=True)


def cmd_genconfig(args: argparse.Namespace) -> int:
    text = genconfig()
    if not args.file or args.file == "-":
        sys.stdout.write(text)
        return 0
    try:
        with open(args.file, "x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError:
        print(f"tidings: {args.file} exists; not overwritten", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tidings: can't write {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"tidings: wrote {args.file}", file=sys.stderr)
    return 0


def cmd_checkconfig(args: argparse.Namespace) -> int:
    # The file alone: what the environment of this shell holds is not the server's.
    try:
        load_config(args.file, environ={})
    except ConfigError as exc:
        _config_error(exc)
        return 2
    print("ok")
    return 0


def _banner(config: Config, url: str, generated: bool) -> None:
    where = "generated for this run" if generated else "configured"
    workers = f" ({config.workers} workers)" if config.workers > 1 else ""
    print(f"tidings serving on {url}{workers}", flush=True)
    print(f"  publish API key ({where}): {config.api_key}", flush=True)
    if config.demo:
        print(f"  demo page: {url}/", flush=True)
        print(f"  chat: {url}/demo/chat", flush=True)
    print(f"  try: curl -N {url}/stream/news", flush=True)


def demo_warning(config: Config) -> str | None:
    """What to warn of when the demo page was forced onto a public address."""
    if not config.demo or is_loopback_host(config.host):
        return None
    return (
        f"the demo page on {config.host!r} (demo_public) hands the publish API key to "
        "anyone who can reach this address"
    )


def _raise_open_files_limit() -> None:
    """Every connection is a file descriptor: lift the soft limit (often 1,024) to the hard
    one, which an unprivileged process may do."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        # Where this is refused, serve within the limit there is.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(config: Config, generated: bool) -> int:
    from tidings.server import Server

    try:
        server = Server(config)
    except ConfigError as exc:
        # A hook module that fails to import stops start-up with its error.
        print(f"tidings: configuration error: {exc}", file=sys.stderr)
        if exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        return 2
    try:
        await server.start()
    except ConfigError as exc:
        _config_error(exc)
        return 2
    except OSError as exc:
        where = f"{config.host}:{config.port}"
        print(f"tidings: can't listen on {where}: {exc.strerror}", file=sys.stderr, flush=True)
        return 1
    except BrokerError as exc:
        print(f"tidings: can't start the broker: {exc}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            await server.aclose()
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _banner(config, server.url, generated)
    await stop.wait()
    print("tidings: shutting down", flush=True)
    await server.aclose()
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from tidings.client.publisher import Publisher

    data: Any = args.data
    try:
        pub = Publisher(args.url, args.api_key or os.environ.get("TIDINGS_API_KEY", ""))
    except ValueError as exc:
        print(f"tidings: {exc}", file=sys.stderr)
        return 2
    with pub:
        try:
            result = pub.publish(args.channel, data, event=args.event, raw=True)
        except TidingsError as exc:
            print(f"tidings: {exc}", file=sys.stderr)
            return 1
    print(
        f"{result.channel} offset {result.offset} epoch {result.epoch} -> "
        f"{result.subscribers} subscriber(s)"
    )
    return 0


def cmd_subscribe(args: argparse.Namespace) -> int:
    from tidings.client.subscriber import subscribe_print

    try:
        return int(_run(subscribe_print(args.url, args.channels, args.since, args.last, args.raw)))
    except KeyboardInterrupt:
        return 0


def cmd_token(args: argparse.Namespace) -> int:
    from tidings.core.tokens import mint_token

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _config_error(exc)
        return 2
    secret = config.token_hmac_secret_key
    if not secret:
        print(
            "tidings: no token_hmac_secret_key configured (tidings.toml or "
            "TIDINGS_TOKEN_HMAC_SECRET_KEY)",
            file=sys.stderr,
        )
        return 2
    # RFC 7518 §3.2: an HS256 key must be at least as long as the hash, 256 bits.
    size = len(secret.encode())
    if size < HS256_KEY_BYTES:
        print(
            f"tidings: token_hmac_secret_key is {size} bytes; HS256 needs at least "
            f"{HS256_KEY_BYTES} (RFC 7518 §3.2): use a longer random secret, e.g. "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`',
            file=sys.stderr,
        )
        return 2
    claims = {}
    if config.token_audience:
        claims["aud"] = config.token_audience
    if config.token_issuer:
        claims["iss"] = config.token_issuer
    ttl = args.ttl if args.ttl > 0 else None
    print(mint_token(secret, args.user, ttl=ttl, channel=args.channel, **claims))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tidings.bench.fanout import run_fanout

    return int(run_fanout(args))


def cmd_bench_chat(args: argparse.Namespace) -> int:
    from tidings.bench.chat import run_chat

    return int(run_chat(args))


def cmd_bench_publish(args: argparse.Namespace) -> int:
    from tidings.bench.publish import run_publish

    return int(run_publish(args))


def cmd_bench_attack(args: argparse.Namespace) -> int:
    from tidings.bench.attack import run_attack

    return int(run_attack(args))


def build_parser() -> argparse.ArgumentParser:
    from tidings import __version__

    parser = argparse.ArgumentParser(prog="tidings", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the hub")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--config", help="a tidings.toml file")
    serve.add_argument("--api-key", help="key for the publish API (default: generated)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--demo", action="store_true", help="serve the demo page at /")
    serve.add_argument(
        "--demo-public",
        action="store_true",
        help="allow --demo on a non-loopback address (the page carries the API key)",
    )
    serve.add_argument("--allowed-origin", action="append", help="allowed browser Origin")
    serve.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT for workers")
    serve.add_argument(
        "--broker",
        help="memory (default), sqlite:///file.db (durable history), or redis://host:port "
        "to share the hub with other nodes",
    )
    serve.add_argument(
        "--history-path",
        metavar="FILE",
        help="keep history in this SQLite file across restarts (single node)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the port (default 1; more need a shared --broker)",
    )
    serve.add_argument("--certfile", help="TLS: PEM certificate chain (with --keyfile)")
    serve.add_argument("--keyfile", help="TLS: PEM private key of the certificate")
    serve.add_argument(
        "--hooks", action="append", metavar="MODULE", help="a module of hooks (repeatable)"
    )
    serve.set_defaults(func=cmd_serve)

    publish = sub.add_parser("publish", help="publish one message")
    publish.add_argument("channel")
    publish.add_argument("data", help="JSON, or text when it is not JSON")
    publish.add_argument("--event", help="event name")
    publish.add_argument("--url", default=os.environ.get("TIDINGS_URL", DEFAULT_URL))
    publish.add_argument("--api-key", help="default: $TIDINGS_API_KEY")
    publish.set_defaults(func=cmd_publish)

    subscribe = sub.add_parser("subscribe", help="print messages as they come")
    subscribe.add_argument("channels", nargs="+")
    subscribe.add_argument("--since", help="resume: an offset, or channel:offset,...")
    subscribe.add_argument("--last", type=int, help="start with the last N messages")
    subscribe.add_argument("--raw", action="store_true", help="print payloads only")
    subscribe.add_argument("--url", default=os.environ.get("TIDINGS_URL", DEFAULT_URL))
    subscribe.set_defaults(func=cmd_subscribe)

    token = sub.add_parser("token", help="mint a connection or subscription token (JWT)")
    token.add_argument("--user", required=True, help="user id (the sub claim)")
    token.add_argument("--channel", help="make a subscription token for this channel")
    token.add_argument("--ttl", type=int, default=3600, help="seconds; 0 = never expires")
    token.add_argument("--config", help="a tidings.toml file")
    token.set_defaults(func=cmd_token)

    gen = sub.add_parser("genconfig", help="write a commented tidings.toml with every default")
    gen.add_argument("file", nargs="?", help="where to write it (default: standard output)")
    gen.set_defaults(func=cmd_genconfig)

    check = sub.add_parser("checkconfig", help="validate a tidings.toml without starting")
    check.add_argument("file")
    check.set_defaults(func=cmd_checkconfig)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    fanout = bench_sub.add_parser("fanout", help="N WebSocket subscribers, M messages")
    from tidings.bench.fanout import add_arguments

    add_arguments(fanout)
    fanout.set_defaults(func=cmd_bench)
    attack = bench_sub.add_parser(
        "attack", help="slowloris, non-reading pipeliners and stalled subscribers at once"
    )
    from tidings.bench.attack import add_arguments as add_attack_arguments

    add_attack_arguments(attack)
    attack.set_defaults(func=cmd_bench_attack)
    publish_bench = bench_sub.add_parser(
        "publish", help="publishes/s from one client: into Redis and through the HTTP API"
    )
    from tidings.bench.publish import add_arguments as add_publish_arguments

    add_publish_arguments(publish_bench)
    publish_bench.set_defaults(func=cmd_bench_publish)
    chat = bench_sub.add_parser("chat", help="a chat where every message goes through a hook")
    from tidings.bench.chat import add_arguments as add_chat_arguments

    add_chat_arguments(chat)
    chat.set_defaults(func=cmd_bench_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
