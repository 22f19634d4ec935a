"""Broker implementations: ``MemoryBroker`` (embedded default)."""

from .memory import MemoryBroker

__all__ = ["MemoryBroker"]
