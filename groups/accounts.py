"""User accounts: validation, registration, password checks and changes, and
the token generation check.

Password hashing runs through ``groups.passwords.PasswordHashing`` (threads,
bounded), never on the event loop. A token names an account and a generation
(``users.token_gen``); ``current_user`` accepts it only while both still hold.
"""

from __future__ import annotations

import re

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from common.errors import BadRequest, Conflict, Unauthorized
from groups.models import User
from groups.passwords import PasswordHashing

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 256
DISPLAY_NAME_MAX_CHARS = 64
COMMON_PASSWORDS = frozenset(
    {"password", "12345678", "123456789", "1234567890", "qwertyui", "qwerty123",
     "password1", "iloveyou", "11111111", "00000000", "abcdefgh", "letmein1"}
)


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
    session: AsyncSession, passwords: PasswordHashing, username: str, password: str,
    display_name: str | None, now: float,
) -> User:
    name = normalise_username(username)
    check_password_strength(password, name)
    shown = clean_display_name(display_name) if display_name is not None else name
    existing = await session.exec(select(User).where(User.username == name))
    if existing.first() is not None:
        raise Conflict("username is taken")
    user = User(
        username=name, display_name=shown, password_hash=await passwords.hash(password),
        created_at=now,
    )
    session.add(user)
    await session.flush()
    return user


async def authenticate(
    session: AsyncSession, passwords: PasswordHashing, username: str, password: str
) -> User:
    result = await session.exec(select(User).where(User.username == username.strip().lower()))
    user = result.first()
    # A missing user costs the same check, so timing does not reveal which usernames exist.
    if not await passwords.verify(user.password_hash if user else None, password) or not user:
        raise Unauthorized("wrong username or password")
    return user


async def check_password(passwords: PasswordHashing, user: User, password: str) -> None:
    """Re-entered password for a sensitive action (password change, account deletion)."""
    if not await passwords.verify(user.password_hash, password):
        raise Unauthorized("wrong password")


async def change_password(
    session: AsyncSession, passwords: PasswordHashing, user: User, current: str, new: str
) -> User:
    """Set a new password and bump the token generation: every older token dies."""
    await check_password(passwords, user, current)
    check_password_strength(new, user.username)
    if new == current:
        raise BadRequest("the new password must differ from the current one")
    user.password_hash = await passwords.hash(new)
    user.token_gen += 1
    session.add(user)
    await session.flush()
    return user


async def current_user(session: AsyncSession, user_id: int, generation: int) -> User:
    """The account a token names, if it still exists at the token's generation."""
    user = await session.get(User, user_id)
    if user is None:
        raise Unauthorized("this account no longer exists")
    if user.token_gen != generation:
        raise Unauthorized("token revoked: the password changed or the account was reset")
    return user
