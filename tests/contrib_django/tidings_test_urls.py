"""URLs of tidings' Django tests."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("tidings/", include("tidings.contrib.django.urls")),
    path("", include("notices.urls")),  # examples/django_notifications
]
