"""JWT connection and subscription tokens (RFC 7519), verified with a pinned algorithm list.

Only the algorithms of the configured keys are accepted: HS256/384/512 with the HMAC secret,
RS256/384/512 with the RSA public key, ES256/384/512 with the ECDSA public key. ``alg: none``
and any other algorithm are refused before a signature is even looked at. Expiry (``exp``)
is always checked; ``aud`` and ``iss`` when configured.

The two kinds are told apart by the ``channel`` claim, as in Centrifugo: a subscription token
must name its channel, and a connection token must not name one (its maintainers: "connection
token can't contain channel claim", centrifugal/centrifugo#635). Otherwise a grant for one
channel would open a session as its user, and a session token would pass for a channel grant.
The kind is checked before expiry, so a token of the wrong kind is invalid even when expired.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson

from tidings.exceptions import InvalidToken, TokenExpired

from .permissions import Caps

__all__ = [
    "EC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "RSA_ALGORITHMS",
    "ConnectToken",
    "SubscribeToken",
    "TokenVerifier",
    "mint_token",
]

HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"]
RSA_ALGORITHMS = ["RS256", "RS384", "RS512"]
EC_ALGORITHMS = ["ES256", "ES384", "ES512"]


@dataclass(slots=True)
class ConnectToken:
    """Claims of a connection token."""

    user: str
    exp: int = 0
    expire_at: int | None = None
    info: bytes | None = None
    channels: list[str] = field(default_factory=list)
    # channel -> {"info": bytes, "data": bytes, "override": ..., "expire_at": ...}: the
    # options of a server-side subscription, as an ``on_connect`` hook gives them.
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: Any = None
    caps: Caps | None = None


@dataclass(slots=True)
class SubscribeToken:
    """Claims of a subscription token."""

    user: str
    channel: str
    exp: int = 0
    expire_at: int | None = None
    info: bytes | None = None
    override: dict[str, Any] = field(default_factory=dict)


class TokenVerifier:
    """Verifies tokens against the configured keys; raises ``InvalidToken``/``TokenExpired``."""

    def __init__(
        self,
        *,
        hmac_secret: str = "",
        rsa_public_key: str = "",
        ecdsa_public_key: str = "",
        audience: str = "",
        issuer: str = "",
        leeway: float = 0.0,
    ) -> None:
        self._keys: list[tuple[Any, list[str]]] = []
        if hmac_secret:
            self._keys.append((hmac_secret, HMAC_ALGORITHMS))
        if rsa_public_key:
            self._keys.append((rsa_public_key, RSA_ALGORITHMS))
        if ecdsa_public_key:
            self._keys.append((ecdsa_public_key, EC_ALGORITHMS))
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def _decode(self, token: str, *, subscription: bool) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("malformed token") from None
        alg = str(header.get("alg"))
        keys = [key for key, algorithms in self._keys if alg in algorithms]
        if not keys:
            raise InvalidToken("algorithm not allowed")
        try:
            claims = self._verified(token, keys[0], alg, verify_exp=True)
        except jwt.ExpiredSignatureError:
            # Genuine but past its exp (RFC 7519 §4.1.4). One of the wrong kind is invalid
            # rather than expired (Centrifugo's order), so no client is sent to refresh it.
            claims = self._verified(token, keys[0], alg, verify_exp=False)
            _check_kind(claims, subscription=subscription)
            raise TokenExpired("token expired") from None
        _check_kind(claims, subscription=subscription)
        return claims

    def _verified(self, token: str, key: Any, alg: str, *, verify_exp: bool) -> dict[str, Any]:
        """The claims of a token whose signature, ``aud``, ``iss`` and (when asked) ``exp``
        hold; ``jwt.ExpiredSignatureError`` passes through, anything else is ``InvalidToken``."""
        options = {"require": ["sub"], "verify_aud": bool(self.audience), "verify_exp": verify_exp}
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience or None,
                issuer=self.issuer or None,
                leeway=self.leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {type(exc).__name__}") from None
        if not isinstance(claims.get("sub"), str):
            raise InvalidToken("sub must be a string")
        return claims

    def connect_token(self, token: str) -> ConnectToken:
        """A connection token's claims; one with a ``channel`` claim is ``InvalidToken``."""
        claims = self._decode(token, subscription=False)
        channels = claims.get("channels", [])
        subs = claims.get("subs", {})
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise InvalidToken("channels must be a list of strings")
        if not isinstance(subs, dict) or not all(
            isinstance(o, dict) for o in subs.values() if o is not None
        ):
            raise InvalidToken("subs must be an object of objects")
        caps = None
        if claims.get("caps") is not None:
            try:
                caps = Caps.parse(claims["caps"])
            except (TypeError, ValueError) as exc:
                raise InvalidToken(f"caps: {exc}") from None
        return ConnectToken(
            user=claims["sub"],
            exp=int(claims.get("exp", 0)),
            expire_at=_optional_int(claims, "expire_at"),
            info=_info(claims),
            channels=channels,
            subs={ch: _sub_options(o or {}) for ch, o in subs.items()},
            meta=claims.get("meta"),
            caps=caps,
        )

    def subscribe_token(self, token: str) -> SubscribeToken:
        """A subscription token's claims; one without a ``channel`` claim is ``InvalidToken``."""
        claims = self._decode(token, subscription=True)
        channel = claims["channel"]
        override = claims.get("override", {})
        if not isinstance(override, dict):
            raise InvalidToken("override must be an object")
        return SubscribeToken(
            user=claims["sub"],
            channel=channel,
            exp=int(claims.get("exp", 0)),
            expire_at=_optional_int(claims, "expire_at"),
            info=_info(claims),
            override=override,
        )


def _check_kind(claims: dict[str, Any], *, subscription: bool) -> None:
    """Refuse a connection token where a subscription token is due, and the reverse.

    A subscription token names a channel (a non-empty string); a connection token names none
    (its ``channel`` is absent, null or empty). Any other ``channel`` fits neither."""
    channel = claims.get("channel")
    if subscription:
        if not isinstance(channel, str) or not channel:
            raise InvalidToken("not a subscription token: no channel claim")
    elif channel not in (None, ""):
        raise InvalidToken("not a connection token: it has a channel claim")


def _optional_int(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, int):
        raise InvalidToken(f"{name} must be an integer")
    return value


def _info(claims: dict[str, Any], name: str = "info") -> bytes | None:
    """``info`` (any JSON) or ``b64info`` (base64 bytes), as raw bytes."""
    if "b64" + name in claims:
        try:
            return base64.b64decode(claims["b64" + name], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise InvalidToken(f"b64{name} is not base64") from None
    if name in claims:
        return orjson.dumps(claims[name])
    return None


def _sub_options(options: dict[str, Any]) -> dict[str, Any]:
    """A ``subs`` entry of a connection token (Centrifugo's ``SubscribeOptions``: ``info``,
    ``b64info``, ``data``, ``b64data``, ``override``, ``expire_at``) as an ``on_connect``
    hook gives a server-side subscription's options."""
    out: dict[str, Any] = {}
    for name in ("info", "data"):
        value = _info(options, name)
        if value is not None:
            out[name] = value
    for name in ("override", "expire_at"):
        if options.get(name) is not None:
            out[name] = options[name]
    return out


def mint_token(
    secret: str,
    user: str,
    *,
    ttl: float | None = 3600,
    channel: str | None = None,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A signed token for ``user``: a subscription token when ``channel`` is given."""
    payload: dict[str, Any] = {"sub": user, "iat": int(time.time())}
    if ttl is not None:
        payload["exp"] = int(time.time() + ttl)
    if channel is not None:
        payload["channel"] = channel
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)
