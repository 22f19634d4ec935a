"""The native asyncio server."""

from .server import Server

__all__ = ["Server"]
