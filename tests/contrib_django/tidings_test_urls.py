"""URLs of tidings' Django tests."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from tidings.contrib.django import asend_event


async def async_view(request: HttpRequest) -> JsonResponse:
    """An async view publishing, as a project's would."""
    result = await asend_event("pinged", {"by": "async"}, channel="async-news")
    return JsonResponse({"offset": result.offset})


urlpatterns = [
    path("tidings/", include("tidings.contrib.django.urls")),
    path("async-ping/", async_view),
    path("", include("notices.urls")),  # examples/django_notifications
]
