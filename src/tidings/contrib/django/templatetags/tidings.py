"""``{% load tidings %}{% tidings_client "room-1" %}``: the page's tidings.js configuration.

The tag writes one ``<script type="application/json">`` element (``json_script``: escaped
for HTML, so no value can close the element) holding the module's import URL and the
options for ``subscribe``; the page's own module reads it::

    const config = JSON.parse(document.getElementById("tidings-config").textContent);
    const { subscribe } = await import(config.module);
    subscribe(config.channels, { ...config.options, onMessage(data, meta) { … } });
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import json_script
from django.utils.safestring import SafeString

from ..conf import tidings_settings

__all__ = ["client_config", "register", "tidings_client"]

register = template.Library()


def client_config(channels: list[str], **options: Any) -> dict[str, Any]:
    """What the tag emits: ``module``, ``channels``, ``options`` (``url``,
    ``withCredentials`` and what the tag was given)."""
    conf = tidings_settings()
    hub = str(conf["PUBLIC_URL"] or conf["URL"]).rstrip("/")
    return {
        "module": f"{hub}/tidings.js",
        "channels": channels,
        "options": {"url": hub, "withCredentials": True, **options},
    }


@register.simple_tag
def tidings_client(
    *channels: str, element_id: str = "tidings-config", **options: Any
) -> SafeString:
    """``{% tidings_client "news" "user-1" events="update" %}``."""
    return json_script(client_config(list(channels), **options), element_id)
