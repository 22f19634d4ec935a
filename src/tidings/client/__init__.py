"""Clients for applications: ``Publisher`` (sync and async publishing)."""

from .publisher import Publisher, PublishResult

__all__ = ["PublishResult", "Publisher"]
