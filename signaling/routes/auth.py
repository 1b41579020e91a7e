"""REST: register, log in, guest sessions, who am I, change password.

Every route that checks or sets a password first spends an attempt from the
client address's and the account's buckets (``groups.login_limits``: 429 with
``Retry-After`` when out), then hashes in the bounded thread pool (503 with
``Retry-After`` when that is full). A user's token carries the account's
token generation; changing the password bumps it, so older tokens get 401.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from common.errors import NotFound
from groups import accounts
from groups.login_limits import LoginLimits
from groups.models import User
from signaling.deps import AppState, Caller, Db, State, UserId

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Credentials(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class Registration(Credentials):
    display_name: str | None = Field(None, max_length=128)


class GuestRequest(BaseModel):
    display_name: str = Field(max_length=128)


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


def user_json(user: User) -> dict[str, object]:
    return {"id": user.id, "username": user.username, "display_name": user.display_name}


async def spend_attempt(state: AppState, request: Request, username: str) -> LoginLimits:
    """One password attempt for the caller's address and ``username``, or 429."""
    limits = state.limits
    await limits.check(username, request.client.host if request.client else None,
                       state.clock())
    return limits


def token_reply(state: AppState, user: User) -> dict[str, object]:
    token, expires_at = state.signer.issue(
        str(user.id), "user", user.display_name, state.clock(), state.settings.jwt_ttl_s,
        generation=user.token_gen,
    )
    return {"access_token": token, "token_type": "bearer", "expires_at": expires_at,
            "user": user_json(user)}


@router.post("/register", status_code=201)
async def register(body: Registration, request: Request, state: State,
                   db: Db) -> dict[str, object]:
    limits = await spend_attempt(state, request, body.username)
    user = await accounts.register(
        db, limits.passwords, body.username, body.password, body.display_name, state.clock()
    )
    return token_reply(state, user)


@router.post("/login")
async def login(body: Credentials, request: Request, state: State,
                db: Db) -> dict[str, object]:
    limits = await spend_attempt(state, request, body.username)
    user = await accounts.authenticate(db, limits.passwords, body.username, body.password)
    return token_reply(state, user)


@router.post("/password")
async def change_password(body: PasswordChange, request: Request, user_id: UserId,
                          state: State, db: Db) -> dict[str, object]:
    """A new password; every token issued before (on every device) stops working.

    Returns a fresh token for the caller. Live WebSockets opened with an older
    token are closed with 4401.
    """
    user = await db.get(User, user_id)
    if user is None:
        raise NotFound("this account no longer exists")
    limits = await spend_attempt(state, request, user.username)
    await accounts.change_password(db, limits.passwords, user, body.current_password,
                                   body.new_password)
    await db.commit()
    await announce_revoked(state, user_id, user.token_gen, "password_changed")
    return token_reply(state, user)


async def announce_revoked(state: AppState, user_id: int, generation: int | None,
                           reason: str) -> None:
    """Tell every node to close this user's WebSockets older than ``generation``
    (None: the account is gone, close them all)."""
    await state.bus.publish(f"user:{user_id}", {
        "type": "account", "user_id": user_id, "token_gen": generation, "reason": reason,
    })


@router.post("/guest", status_code=201)
async def guest(body: GuestRequest, state: State) -> dict[str, object]:
    """A short-lived token for nearby rooms only; no account is created."""
    name = accounts.clean_display_name(body.display_name)
    subject = "guest:" + secrets.token_urlsafe(9)
    token, expires_at = state.signer.issue(
        subject, "guest", name, state.clock(), state.settings.guest_ttl_s
    )
    return {"access_token": token, "token_type": "bearer", "expires_at": expires_at,
            "guest": {"id": subject, "display_name": name}}


@router.get("/me")
async def me(identity: Caller, db: Db) -> dict[str, object]:
    if identity.user_id is None:
        return {"id": identity.subject, "display_name": identity.display_name, "kind": "guest"}
    user = await db.get(User, identity.user_id)
    if user is None:
        raise NotFound("this account no longer exists")
    return {**user_json(user), "kind": "user"}
