"""The app's pages and actions."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.notifications, name="notifications"),
    path("import/", views.start_import, name="start_import"),
    path("chat/<slug:room>/", views.chat, name="chat"),
    path("chat/<slug:room>/say/", views.say, name="say"),
]
