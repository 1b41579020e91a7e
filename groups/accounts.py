"""User accounts: validation, registration, password checks (argon2id)."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from common.errors import BadRequest, Conflict, Unauthorized
from groups.models import User

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 256
DISPLAY_NAME_MAX_CHARS = 64
COMMON_PASSWORDS = frozenset(
    {"password", "12345678", "123456789", "1234567890", "qwertyui", "qwerty123",
     "password1", "iloveyou", "11111111", "00000000", "abcdefgh", "letmein1"}
)

_hasher = PasswordHasher()


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_RE.fullmatch(name):
        raise BadRequest(
            "username must be 3-32 characters: lowercase letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def check_password_strength(password: str, username: str) -> None:
    if len(password) < PASSWORD_MIN_CHARS:
        raise BadRequest(f"password must be at least {PASSWORD_MIN_CHARS} characters")
    if len(password) > PASSWORD_MAX_CHARS:
        raise BadRequest(f"password must be at most {PASSWORD_MAX_CHARS} characters")
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(password)) < 4 or username in lowered:
        raise BadRequest("password is too easy to guess")


def clean_display_name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > DISPLAY_NAME_MAX_CHARS or not name.isprintable():
        raise BadRequest(f"display name must be 1-{DISPLAY_NAME_MAX_CHARS} printable characters")
    return name


async def register(
    session: AsyncSession, username: str, password: str, display_name: str | None, now: float
) -> User:
    name = normalise_username(username)
    check_password_strength(password, name)
    shown = clean_display_name(display_name) if display_name is not None else name
    existing = await session.exec(select(User).where(User.username == name))
    if existing.first() is not None:
        raise Conflict("username is taken")
    user = User(
        username=name, display_name=shown, password_hash=_hasher.hash(password), created_at=now
    )
    session.add(user)
    await session.flush()
    return user


async def authenticate(session: AsyncSession, username: str, password: str) -> User:
    result = await session.exec(select(User).where(User.username == username.strip().lower()))
    user = result.first()
    try:
        if user is None:
            # Same work as a real check, so timing does not reveal which usernames exist.
            _hasher.verify(_DUMMY_HASH, password)
            raise Unauthorized("wrong username or password")
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise Unauthorized("wrong username or password") from None
    return user


_DUMMY_HASH = _hasher.hash("not-a-real-password-0")
