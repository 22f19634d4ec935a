"""``path("tidings/", include("tidings.contrib.django.urls"))``: the token views."""

from __future__ import annotations

from django.urls import path

from . import views

__all__ = ["app_name", "urlpatterns"]

app_name = "tidings"
urlpatterns = [
    path("token/connection/", views.connection_token, name="connection_token"),
    path("token/subscription/", views.subscription_token, name="subscription_token"),
]
