"""What every connection of the native server is given: a small context, not the server."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tidings.core.tick import Tick, tick

from .formats import TemplateFormat
from .outbox import Flusher

if TYPE_CHECKING:
    from tidings.app import App

__all__ = ["Context"]


class Context:
    """The application, the loop, the write coalescer, the loop's batched work
    (``core/tick.py``) and the shared template formats."""

    __slots__ = (
        "app",
        "client_options",
        "config",
        "flusher",
        "loop",
        "node",
        "template_formats",
        "tick",
    )

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.config = app.config
        self.node = app.node
        self.client_options = app.client_options
        self.loop = loop
        self.flusher = Flusher(loop, app)
        self.tick: Tick = tick(loop)
        self.template_formats = {n: TemplateFormat(t) for n, t in app.templates.items()}
