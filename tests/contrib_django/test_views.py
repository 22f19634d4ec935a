"""The token views and the {% tidings_client %} tag."""

from __future__ import annotations

import json
import re

import jwt
import pytest
from django.contrib.auth.models import User
from django.template import Context, Template
from django.test import Client, override_settings

from tidings.core.tokens import TokenVerifier
from tidings.exceptions import InvalidToken

SECRET = "tests-only-hmac-secret-of-32-bytes-or-more"


def allow_rooms(user: User, channel: str) -> bool:
    """A project's SUBSCRIBE_PERMISSION."""
    return channel.startswith("room-") and user.username != "banned"


@pytest.fixture
def browser(db: None) -> tuple[Client, User]:
    user = User.objects.create_user("ann")
    client = Client()
    client.force_login(user)
    return client, user


def test_connection_token_names_the_user_and_passes_the_hub_verifier(
    browser: tuple[Client, User],
) -> None:
    client, user = browser
    answer = client.get("/tidings/token/connection/")
    assert answer.status_code == 200 and "no-cache" in answer["Cache-Control"]
    token = answer.json()["token"]
    claims = TokenVerifier(hmac_secret=SECRET).connect_token(token)
    assert claims.user == str(user.pk)
    with pytest.raises(InvalidToken):  # a subscription token can't pass for it
        TokenVerifier(hmac_secret=SECRET).connect_token(
            client.get("/tidings/token/subscription/", {"channel": f"user-{user.pk}"}).json()[
                "token"
            ]
        )
    assert client.post("/tidings/token/connection/").status_code == 405


def test_subscription_tokens_default_to_the_users_own_channel(
    browser: tuple[Client, User],
) -> None:
    client, user = browser
    answer = client.get("/tidings/token/subscription/", {"channel": f"user-{user.pk}"})
    claims = jwt.decode(answer.json()["token"], SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["channel"]) == (str(user.pk), f"user-{user.pk}")
    refused = client.get("/tidings/token/subscription/", {"channel": "user-99999"})
    assert refused.status_code == 403 and refused.json() == {"error": "permission denied"}
    bad = client.get("/tidings/token/subscription/", {"channel": "no spaces"})
    assert bad.status_code == 400 and bad.json() == {"error": "bad channel name"}


def test_the_permission_callback_decides(browser: tuple[Client, User]) -> None:
    client, _ = browser
    hook = f"{__name__}.allow_rooms"
    with override_settings(TIDINGS={"TOKEN_HMAC_SECRET_KEY": SECRET, "SUBSCRIBE_PERMISSION": hook}):
        assert client.get("/tidings/token/subscription/", {"channel": "room-1"}).status_code == 200
        assert client.get("/tidings/token/subscription/", {"channel": "news"}).status_code == 403


@pytest.mark.django_db
def test_anonymous_users_and_missing_keys_get_precise_answers() -> None:
    client = Client()
    answer = client.get("/tidings/token/connection/")
    assert answer.status_code == 401 and answer.json() == {"error": "log in first"}
    assert client.get("/tidings/token/subscription/", {"channel": "a"}).status_code == 401
    with override_settings(TIDINGS={"TOKEN_HMAC_SECRET_KEY": "short"}):
        answer = client.get("/tidings/token/connection/")
    assert answer.status_code == 503 and answer.json() == {"error": "tokens are not configured"}


def render(source: str, **context: object) -> str:
    return Template("{% load tidings %}" + source).render(Context(context))


def test_the_tag_emits_the_module_url_and_options_as_escaped_json() -> None:
    with override_settings(TIDINGS={"PUBLIC_URL": "https://hub.example/"}):
        html = render('{% tidings_client "news" channel events="update" %}', channel="user-1")
    match = re.fullmatch(r'<script id="tidings-config" type="application/json">(.*)</script>', html)
    assert match, html
    assert json.loads(match.group(1)) == {
        "module": "https://hub.example/tidings.js",
        "channels": ["news", "user-1"],
        "options": {"url": "https://hub.example", "withCredentials": True, "events": "update"},
    }


def test_the_tag_cannot_be_broken_out_of() -> None:
    html = render("{% tidings_client name %}", name="</script><script>alert(1)</script>")
    assert "<script>alert" not in html and html.count("</script>") == 1
    assert "\\u003C/script\\u003E" in html
