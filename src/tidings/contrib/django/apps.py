"""The Django app: ``"tidings.contrib.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["TidingsConfig"]


class TidingsConfig(AppConfig):
    """Gives the project the outbox model, the ``tidings`` and ``tidings_outbox``
    commands and the ``{% tidings_client %}`` tag."""

    name = "tidings.contrib.django"
    label = "tidings"
    verbose_name = "tidings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .conf import tidings_settings

        tidings_settings()  # refuse a misspelt key at start-up, not at the first publish
