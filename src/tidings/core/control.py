"""The controller contract: commands between the nodes of one hub.

The server API acts on connections wherever they are: ``disconnect`` a user, server-side
``subscribe``/``unsubscribe``/``refresh``, ``channels`` and ``info`` across the cluster, and
``/emulation`` requests reach the node that holds the session. The contract:

1. Every node whose controller started on the same backend is reachable until it stops
   (``aclose``) or stops answering.
2. ``broadcast(command)`` runs ``command`` on every live node, this one included, and
   returns their answers; a node that doesn't answer within the controller's timeout is
   left out (and logged).
3. ``send(node_id, command)`` runs it on that node and returns its answer;
   ``ControlError`` when the node is unknown or doesn't answer in time.
4. Commands and answers are JSON values (dicts with a ``"method"`` key for commands), so
   that a controller may carry them over a network. Each node runs commands through its
   ``ControlHandler`` (the ``Node``), which never raises for a well-formed command.
"""

from __future__ import annotations

import abc
from typing import Any, Protocol

__all__ = ["ControlHandler", "Controller"]


class ControlHandler(Protocol):
    """What a controller calls on the node that owns it."""

    async def handle_control(self, command: dict[str, Any]) -> dict[str, Any]:
        """Run one command from any node and answer it."""


class Controller(abc.ABC):
    """Delivers commands between nodes."""

    node_id: str = ""
    handler: ControlHandler | None = None

    def set_handler(self, node_id: str, handler: ControlHandler) -> None:
        self.node_id = node_id
        self.handler = handler

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Join the backend: from now on other nodes reach this one."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Leave the backend."""

    @abc.abstractmethod
    async def broadcast(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        """Run ``command`` on every live node; their answers."""

    @abc.abstractmethod
    async def send(self, node_id: str, command: dict[str, Any]) -> dict[str, Any]:
        """Run ``command`` on one node; its answer, or ``ControlError``."""

    @abc.abstractmethod
    async def nodes(self) -> list[str]:
        """Ids of the live nodes."""
