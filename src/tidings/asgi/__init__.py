"""tidings as an ASGI 3 application: the native server's endpoints inside Starlette,
FastAPI, Django's ASGI or any ASGI server (docs/asgi.md)."""

from .application import TidingsASGI

__all__ = ["TidingsASGI"]
