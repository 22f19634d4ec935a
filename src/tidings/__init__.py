"""tidings: real-time push for Python web applications."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidings.core.conn import Conn, Publish
from tidings.core.hooks import Hooks
from tidings.core.hooks import default_hooks as hooks
from tidings.exceptions import NoSuchConnection, Reject

if TYPE_CHECKING:
    from tidings.client.publisher import Publisher

__all__ = [
    "Conn",
    "Hooks",
    "NoSuchConnection",
    "Publish",
    "Publisher",
    "Reject",
    "__version__",
    "hooks",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy, so that importing any part of tidings (the sans-I/O protocol layer, say) does
    # not import the publisher's HTTP client.
    if name == "Publisher":
        from tidings.client.publisher import Publisher

        return Publisher
    raise AttributeError(f"module 'tidings' has no attribute {name!r}")
