"""JWT tokens: issued, checked, and every way of getting them wrong refused."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from common.errors import Unauthorized
from signaling.auth import TokenSigner, bearer_token

NOW = 1_800_000_000.0
SIGNER = TokenSigner("s3cret-for-tests-0123456789-abcdef", "disco", "disco")


def test_round_trip_user_and_guest() -> None:
    token, expires_at = SIGNER.issue("42", "user", "Alice", NOW, 3600)
    identity = SIGNER.verify(token, NOW + 10)
    assert (identity.user_id, identity.kind, identity.display_name) == (42, "user", "Alice")
    assert expires_at == int(NOW) + 3600
    guest, _ = SIGNER.issue("guest:abc", "guest", "Bo", NOW, 60)
    g = SIGNER.verify(guest, NOW)
    assert g.is_guest and g.user_id is None and g.subject == "guest:abc"


def _forge(claims: dict[str, object], key: str = "s3cret-for-tests-0123456789-abcdef",
           algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


GOOD = {"sub": "1", "kind": "user", "aud": "disco", "iss": "disco", "iat": int(NOW),
        "exp": int(NOW) + 60}


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "missing"),
        ("not-a-jwt", "invalid token"),
        (_forge(GOOD, key="another-secret-entirely-000-abcdefgh"), "Signature verification failed"),
        (_forge(GOOD, algorithm="HS512"), "alg value is not allowed"),
        (_forge({**GOOD, "aud": "other"}), "(?i)audience"),
        (_forge({**GOOD, "iss": "other"}), "issuer"),
        (_forge({k: v for k, v in GOOD.items() if k != "exp"}), "exp"),
        (_forge({**GOOD, "sub": "alice"}), "bad subject"),
        (_forge({**GOOD, "kind": "admin"}), "bad kind"),
        (_forge({**GOOD, "exp": int(NOW) - 1}), "expired"),
        ("x" * 5000, "malformed"),
    ],
)
def test_bad_tokens_are_refused(token: str, why: str) -> None:
    with pytest.raises(Unauthorized, match=why):
        SIGNER.verify(token, NOW)


def test_alg_none_is_refused() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(GOOD).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized):
        SIGNER.verify(f"{header}.{body}.", NOW)


def test_tampered_payload_is_refused() -> None:
    token, _ = SIGNER.issue("1", "user", "A", NOW, 60)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "2"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized, match="Signature"):
        SIGNER.verify(f"{header}.{forged}.{signature}", NOW)


def test_token_expires_at_its_exp() -> None:
    token, expires_at = SIGNER.issue("1", "user", "A", NOW, 60)
    SIGNER.verify(token, expires_at - 1)
    with pytest.raises(Unauthorized, match="expired"):
        SIGNER.verify(token, expires_at)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer"])
def test_bearer_header_required(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)


def test_user_tokens_carry_the_account_generation() -> None:
    token, _ = SIGNER.issue("7", "user", "A", NOW, 60, generation=3)
    assert SIGNER.verify(token, NOW).generation == 3
    legacy = _forge(GOOD)  # issued before generations existed: generation 0
    assert SIGNER.verify(legacy, NOW).generation == 0


@pytest.mark.parametrize("gen", ["1", -1, 1.5, True, 2**40, None])
def test_bad_generation_is_refused(gen: object) -> None:
    with pytest.raises(Unauthorized, match="bad generation"):
        SIGNER.verify(_forge({**GOOD, "gen": gen}), NOW)
