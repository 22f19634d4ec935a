"""A peer for ``tidings bench fanout --peer asgi``: ``tidings.asgi`` under uvicorn.

The same endpoints as ``tidings serve`` (subscribers on ``/ws/<channel>?format=raw``,
``POST /pub/<channel>``, ``GET /pub/<channel>`` for the count), served by uvicorn with its
fastest parts (uvloop, httptools, the sans-I/O websockets layer), so that memory per
connection and fan-out compare the ASGI front end with the native listener on one machine.
Run as ``python -m tidings.bench.peer_asgi --api-key KEY --max-connections N``; it prints
``serving on http://127.0.0.1:PORT`` (a port chosen by the OS).
"""

from __future__ import annotations

import argparse
import asyncio

__all__ = ["main", "serve_asgi"]


async def serve_asgi(api_key: str, max_connections: int) -> None:
    from tidings.asgi import TidingsASGI
    from tidings.config import Config
    from tidings.testing.uvicorn import uvicorn_serving

    # No heartbeat during a run: the bench counts data frames only.
    config = Config(api_key=api_key, max_connections=max_connections, ping_interval=3600)
    options = {"http": "httptools", "ws_ping_interval": None, "backlog": 4096}
    async with uvicorn_serving(TidingsASGI(config), **options) as run:
        print(f"serving on http://127.0.0.1:{run.port}", flush=True)
        await run.task  # until SIGTERM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--max-connections", type=int, default=100000)
    args = parser.parse_args()
    from .peers import raise_open_files

    raise_open_files(args.max_connections)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        asyncio.run(serve_asgi(args.api_key, args.max_connections))
    else:
        uvloop.run(serve_asgi(args.api_key, args.max_connections))


if __name__ == "__main__":
    main()
