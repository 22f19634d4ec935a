"""Integrations with web frameworks: ``tidings.contrib.django``."""

__all__: list[str] = []
