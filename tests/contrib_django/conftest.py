"""Fixtures of tidings' Django tests."""

from __future__ import annotations

# The fixture a project's tests get from `pytest_plugins = ["tidings.contrib.django.testing"]`.
from tidings.contrib.django.testing import tidings_publications

__all__ = ["tidings_publications"]
