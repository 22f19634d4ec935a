"""Broker implementations: the embedded memory broker, presence and controller."""

from .memory import MemoryBackend, MemoryBroker
from .memory_control import MemoryController, MemoryPresenceManager

__all__ = ["MemoryBackend", "MemoryBroker", "MemoryController", "MemoryPresenceManager"]
