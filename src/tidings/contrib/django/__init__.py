"""tidings for Django projects: docs/django.md.

Add ``"tidings.contrib.django"`` to ``INSTALLED_APPS`` and a ``TIDINGS`` setting; publish
with ``send_event``/``publish`` (after the commit inside ``transaction.atomic()``), run the
hub with ``python manage.py tidings``.
"""

from __future__ import annotations

from .publishing import apublish, asend_event, get_publisher, publish, send_event

__all__ = ["apublish", "asend_event", "get_publisher", "publish", "send_event"]
