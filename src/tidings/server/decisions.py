"""What an endpoint decides, without doing any I/O: a response, a stream, or a long-poll.

Endpoints take the ``App`` and a parsed ``Request`` and return one of these (or an
awaitable of one when they have to wait: for a remote broker, or for the hooks of a
connection that opens). The listener carries the decision out on its transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from tidings.core.publication import StreamPosition

if TYPE_CHECKING:
    from .context import Context
    from .lpsession import LongPollSession
    from .outbox import Outbox

__all__ = ["Decision", "LongPollStart", "Response", "StreamStart"]

Response = tuple[int, bytes, list[tuple[str, str]]]


@dataclass(slots=True)
class StreamStart:
    """The request becomes a stream: write ``head`` (a 101 or a response head), then the
    connection ``make`` builds takes the transport over."""

    head: bytes
    make: Callable[[Context, asyncio.Transport], Outbox]


@dataclass(slots=True)
class LongPollStart:
    """Answer with what came after the positions, or wait for it (``/lp``)."""

    channels: list[str]
    raw: bool
    headers: list[tuple[str, str]]
    resume: dict[str, StreamPosition]
    last: int | None
    session: LongPollSession  # the client's, across its polls (lpsession.py)


Decision = Union[  # noqa: UP007
    Response, StreamStart, LongPollStart, Awaitable[Union[Response, StreamStart, LongPollStart]]  # noqa: UP007
]
