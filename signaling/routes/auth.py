"""REST: register, log in, guest sessions, who am I."""

from __future__ import annotations

import secrets

from fastapi import APIRouter
from pydantic import BaseModel, Field

from common.errors import NotFound
from groups import accounts
from groups.models import User
from signaling.deps import Caller, Db, State

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Credentials(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class Registration(Credentials):
    display_name: str | None = Field(None, max_length=128)


class GuestRequest(BaseModel):
    display_name: str = Field(max_length=128)


def user_json(user: User) -> dict[str, object]:
    return {"id": user.id, "username": user.username, "display_name": user.display_name}


@router.post("/register", status_code=201)
async def register(body: Registration, state: State, db: Db) -> dict[str, object]:
    user = await accounts.register(
        db, body.username, body.password, body.display_name, state.clock()
    )
    token, expires_at = state.signer.issue(
        str(user.id), "user", user.display_name, state.clock(), state.settings.jwt_ttl_s
    )
    return {"access_token": token, "token_type": "bearer", "expires_at": expires_at,
            "user": user_json(user)}


@router.post("/login")
async def login(body: Credentials, state: State, db: Db) -> dict[str, object]:
    user = await accounts.authenticate(db, body.username, body.password)
    token, expires_at = state.signer.issue(
        str(user.id), "user", user.display_name, state.clock(), state.settings.jwt_ttl_s
    )
    return {"access_token": token, "token_type": "bearer", "expires_at": expires_at,
            "user": user_json(user)}


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
