"""Broker implementations: ``MemoryBroker`` (embedded default)."""

from .memory import MemoryBroker, MemoryPresenceManager

__all__ = ["MemoryBroker", "MemoryPresenceManager"]
