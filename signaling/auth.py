"""JWT access tokens (HS256, algorithm pinned, audience and issuer checked).

Two kinds of subject: a registered user (``sub`` = user id) and a guest
(``sub`` = ``guest:<random>``, ``kind`` = ``guest``) who may only use nearby
rooms. A user's token also carries ``gen``, the account's token generation
when it was issued: deleting the account or changing its password bumps the
generation, and the edge (``signaling.deps``, ``signaling.ws.session``)
refuses a token whose ``gen`` is not the account's current one. Tokens from
before generations existed have no ``gen`` and count as generation 0.
Pure functions: the caller passes ``now``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

import jwt

from common.errors import Unauthorized

ALGORITHM = "HS256"
CLOCK_SKEW_S = 60
TokenKind = Literal["user", "guest"]


@dataclass(frozen=True)
class Identity:
    subject: str  # "42" for users, "guest:abc" for guests
    kind: TokenKind
    display_name: str
    expires_at: int
    generation: int = 0  # the account's token generation when issued (users only)

    @property
    def user_id(self) -> int | None:
        return int(self.subject) if self.kind == "user" else None

    @property
    def is_guest(self) -> bool:
        return self.kind == "guest"


@dataclass(frozen=True)
class TokenSigner:
    secret: str
    audience: str
    issuer: str

    def issue(
        self, subject: str, kind: TokenKind, display_name: str, now: float, ttl_s: int,
        generation: int = 0,
    ) -> tuple[str, int]:
        expires_at = int(now) + ttl_s
        claims: dict[str, object] = {
            "sub": subject,
            "kind": kind,
            "name": display_name,
            "aud": self.audience,
            "iss": self.issuer,
            "iat": int(now),
            "exp": expires_at,
            "jti": secrets.token_urlsafe(8),
        }
        if kind == "user":
            claims["gen"] = generation
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), expires_at

    def verify(self, token: str, now: float) -> Identity:
        """Decode and check a token; any problem is ``Unauthorized``."""
        if not token or len(token) > 4096:
            raise Unauthorized("missing or malformed token")
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "sub", "aud", "iss", "iat"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        # Times are checked against the caller's clock (``now``), so tests can pass time.
        if int(claims["exp"]) <= now:
            raise Unauthorized("token expired")
        if int(claims["iat"]) > now + CLOCK_SKEW_S:
            raise Unauthorized("invalid token: issued in the future")
        kind = claims.get("kind", "user")
        subject = str(claims["sub"])
        if kind == "user" and not subject.isdigit():
            raise Unauthorized("invalid token: bad subject")
        if kind not in ("user", "guest"):
            raise Unauthorized("invalid token: bad kind")
        generation = claims.get("gen", 0)
        if type(generation) is not int or not 0 <= generation < 2**31:
            raise Unauthorized("invalid token: bad generation")
        return Identity(subject, kind, str(claims.get("name", "")), int(claims["exp"]),
                        generation)


def bearer_token(header: str | None) -> str:
    if not header or not header.lower().startswith("bearer "):
        raise Unauthorized("missing bearer token")
    return header[7:].strip()
