"""Pages: the notifications page, the import button, a chat room."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from tidings.contrib.django import publish

from . import jobs

MAX_TEXT = 500


def hub_url() -> str:
    conf = settings.TIDINGS
    return str(conf.get("PUBLIC_URL") or conf["URL"]).rstrip("/")


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    return render(request, "notices/notifications.html", {"hub": hub_url()})


@login_required
@require_POST
def start_import(request: HttpRequest) -> JsonResponse:
    rows = request.POST.get("rows", "").splitlines()[:10_000]
    jobs.start(request.user.pk, rows)
    return JsonResponse({"started": True}, status=202)


@login_required
def chat(request: HttpRequest, room: str) -> HttpResponse:
    return render(request, "notices/chat.html", {"room": room, "channel": f"room-{room}"})


@login_required
@require_POST
def say(request: HttpRequest, room: str) -> JsonResponse:
    text = request.POST.get("text", "").strip()
    if not text or len(text) > MAX_TEXT:
        return JsonResponse({"error": f"text: 1 to {MAX_TEXT} characters"}, status=400)
    publish(f"room-{room}", {"from": request.user.get_username(), "text": text})
    return JsonResponse({"sent": True})
