"""The server HTTP API: ``POST /api/<method>``, compatible with Centrifugo's (``cent`` works)."""

from .server_api import ServerApi

__all__ = ["ServerApi"]
