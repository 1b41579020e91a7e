"""Tables for users, groups, memberships and invites.

Times are unix seconds (float, UTC). Ids are integers, except invite codes;
a user id is never reused, even after the account is deleted (SQLite
``AUTOINCREMENT`` since migration 0004, PostgreSQL sequences always).
The schema itself is created by the Alembic migrations in common/migrations.
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import Field, SQLModel


class Role(StrEnum):
    owner = "owner"
    admin = "admin"
    member = "member"


ROLE_RANK = {Role.member: 0, Role.admin: 1, Role.owner: 2}


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=32, unique=True, index=True)
    display_name: str = Field(max_length=64)
    password_hash: str = Field(max_length=255)
    created_at: float
    # Bumped by a password change; tokens carry it (``gen``) and die when it moves.
    token_gen: int = Field(default=0)


class Group(SQLModel, table=True):
    __tablename__ = "groups"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    owner_id: int = Field(foreign_key="users.id", index=True)
    created_at: float


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"

    group_id: int = Field(foreign_key="groups.id", primary_key=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", primary_key=True, index=True, ondelete="CASCADE")
    role: str = Field(max_length=16)
    joined_at: float


class Invite(SQLModel, table=True):
    __tablename__ = "invites"

    code: str = Field(primary_key=True, max_length=32)
    group_id: int = Field(foreign_key="groups.id", index=True, ondelete="CASCADE")
    created_by: int = Field(foreign_key="users.id")
    created_at: float
    expires_at: float
    used_by: int | None = Field(default=None, foreign_key="users.id")
    used_at: float | None = None
