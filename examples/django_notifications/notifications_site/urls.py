"""The example's URLs."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("tidings/", include("tidings.contrib.django.urls")),
    path("", include("notices.urls")),
]
