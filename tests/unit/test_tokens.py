"""Connection and subscription tokens are not interchangeable (the ``channel`` claim decides,
as in Centrifugo; docs/protocol.md, "Auth")."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from tidings.core.tokens import InvalidToken, TokenExpired, TokenVerifier, mint_token

SECRET = "tidings-token-tests-hmac-secret-0123456789"
VERIFIER = TokenVerifier(hmac_secret=SECRET)


def signed(**claims: Any) -> str:
    return jwt.encode({"sub": "42", **claims}, SECRET, algorithm="HS256")


def test_each_kind_is_accepted_for_its_own_use():
    assert VERIFIER.connect_token(mint_token(SECRET, "42")).user == "42"
    sub = VERIFIER.subscribe_token(mint_token(SECRET, "42", channel="$room"))
    assert (sub.user, sub.channel) == ("42", "$room")


def test_a_subscription_token_is_not_a_connection_token():
    with pytest.raises(InvalidToken, match="channel claim"):
        VERIFIER.connect_token(mint_token(SECRET, "42", channel="$room"))


def test_a_connection_token_is_not_a_subscription_token():
    with pytest.raises(InvalidToken, match="channel claim"):
        VERIFIER.subscribe_token(mint_token(SECRET, "42", channels=["$room"]))


@pytest.mark.parametrize("channel", ["room", 5, ["room"], {"room": 1}, True])
def test_any_channel_claim_unfits_a_connection_token(channel: Any):
    with pytest.raises(InvalidToken):
        VERIFIER.connect_token(signed(channel=channel))


@pytest.mark.parametrize("channel", ["", None])
def test_an_empty_channel_claim_names_no_channel(channel: Any):
    assert VERIFIER.connect_token(signed(channel=channel)).user == "42"
    with pytest.raises(InvalidToken):
        VERIFIER.subscribe_token(signed(channel=channel))


def test_the_kind_is_checked_before_expiry():
    past = int(time.time()) - 60
    # Of the wrong kind: invalid, so that no client is sent to refresh it.
    with pytest.raises(InvalidToken):
        VERIFIER.connect_token(signed(channel="$room", exp=past))
    with pytest.raises(InvalidToken):
        VERIFIER.subscribe_token(signed(exp=past))
    # Of the right kind: expired.
    with pytest.raises(TokenExpired):
        VERIFIER.connect_token(signed(exp=past))
    with pytest.raises(TokenExpired):
        VERIFIER.subscribe_token(signed(channel="$room", exp=past))


def test_an_expired_token_still_has_its_audience_checked():
    verifier = TokenVerifier(hmac_secret=SECRET, audience="app")
    past = int(time.time()) - 60
    with pytest.raises(TokenExpired):
        verifier.connect_token(signed(aud="app", exp=past))
    with pytest.raises(InvalidToken):
        verifier.connect_token(signed(aud="another-app", exp=past))
