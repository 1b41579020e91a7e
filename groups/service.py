"""Groups, memberships, roles and invites: the rules, over an open DB session.

Functions take the acting user's id and raise ``common.errors`` exceptions;
the caller owns the transaction. A non-member asking about a group gets
``NotFound``, never the group's data.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from common.errors import BadRequest, Conflict, Forbidden, LimitExceeded, NotFound
from groups.models import ROLE_RANK, Group, Invite, Membership, Role, User

GROUP_NAME_MAX_CHARS = 64
INVITE_CODE_BYTES = 9  # 12 url-safe characters


@dataclass(frozen=True)
class MemberView:
    user_id: int
    username: str
    display_name: str
    role: str
    joined_at: float


def clean_group_name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > GROUP_NAME_MAX_CHARS or not name.isprintable():
        raise BadRequest(f"group name must be 1-{GROUP_NAME_MAX_CHARS} printable characters")
    return name


async def create_group(session: AsyncSession, owner_id: int, name: str, now: float) -> Group:
    group = Group(name=clean_group_name(name), owner_id=owner_id, created_at=now)
    session.add(group)
    await session.flush()
    assert group.id is not None
    session.add(Membership(group_id=group.id, user_id=owner_id, role=Role.owner, joined_at=now))
    await session.flush()
    return group


async def role_of(session: AsyncSession, group_id: int, user_id: int) -> Role | None:
    membership = await session.get(Membership, (group_id, user_id))
    return Role(membership.role) if membership else None


async def require_member(
    session: AsyncSession, group_id: int, user_id: int, at_least: Role = Role.member
) -> tuple[Group, Role]:
    """The group and the user's role, or NotFound/Forbidden."""
    role = await role_of(session, group_id, user_id)
    group = await session.get(Group, group_id) if role else None
    if role is None or group is None:
        raise NotFound("no such group")
    if ROLE_RANK[role] < ROLE_RANK[at_least]:
        raise Forbidden(f"needs the {at_least.value} role in this group")
    return group, role


async def my_groups(session: AsyncSession, user_id: int) -> list[tuple[Group, Role]]:
    rows = await session.exec(
        select(Group, Membership.role)
        .join(Membership, col(Membership.group_id) == col(Group.id))
        .where(Membership.user_id == user_id)
        .order_by(col(Group.id))
    )
    return [(group, Role(role)) for group, role in rows.all()]


async def members(session: AsyncSession, group_id: int) -> list[MemberView]:
    rows = await session.exec(
        select(Membership, User)
        .join(User, col(User.id) == col(Membership.user_id))
        .where(Membership.group_id == group_id)
        .order_by(col(Membership.joined_at), col(User.id))
    )
    return [
        MemberView(u.id or 0, u.username, u.display_name, m.role, m.joined_at)
        for m, u in rows.all()
    ]


async def member_ids(session: AsyncSession, group_id: int) -> list[int]:
    rows = await session.exec(select(Membership.user_id).where(Membership.group_id == group_id))
    return list(rows.all())


async def member_count(session: AsyncSession, group_id: int) -> int:
    rows = await session.exec(
        select(func.count()).select_from(Membership).where(Membership.group_id == group_id)
    )
    return int(rows.one())


async def create_invite(
    session: AsyncSession, group_id: int, actor_id: int, now: float, ttl_s: float
) -> Invite:
    await require_member(session, group_id, actor_id, at_least=Role.admin)
    invite = Invite(
        code=secrets.token_urlsafe(INVITE_CODE_BYTES),
        group_id=group_id,
        created_by=actor_id,
        created_at=now,
        expires_at=now + ttl_s,
    )
    session.add(invite)
    await session.flush()
    return invite


async def accept_invite(
    session: AsyncSession, code: str, user_id: int, now: float, max_members: int | None = None
) -> tuple[Group, Membership]:
    """Join the invite's group. ``max_members`` is the plan's limit, if any."""
    invite = await session.get(Invite, code) if 0 < len(code) <= 32 else None
    if invite is None:
        raise NotFound("no such invite")
    if invite.used_by is not None:
        raise Conflict("invite already used")
    if invite.expires_at <= now:
        raise Conflict("invite expired")
    group = await session.get(Group, invite.group_id)
    if group is None:
        raise NotFound("no such invite")
    if await role_of(session, invite.group_id, user_id) is not None:
        raise Conflict("already a member of this group")
    if max_members is not None and await member_count(session, invite.group_id) >= max_members:
        raise LimitExceeded(
            f"group is full: the owner's plan allows {max_members} members",
            detail={"limit": "max_group_members", "value": max_members},
        )
    invite.used_by, invite.used_at = user_id, now
    membership = Membership(
        group_id=invite.group_id, user_id=user_id, role=Role.member, joined_at=now
    )
    session.add(invite)
    session.add(membership)
    await session.flush()
    return group, membership


async def leave_group(session: AsyncSession, group_id: int, user_id: int) -> None:
    _, role = await require_member(session, group_id, user_id)
    if role is Role.owner:
        raise Conflict("the owner cannot leave: transfer ownership or delete the group")
    await session.exec(  # type: ignore[call-overload]
        delete(Membership).where(
            col(Membership.group_id) == group_id, col(Membership.user_id) == user_id
        )
    )


async def remove_member(
    session: AsyncSession, group_id: int, actor_id: int, target_id: int
) -> None:
    _, actor_role = await require_member(session, group_id, actor_id, at_least=Role.admin)
    target_role = await role_of(session, group_id, target_id)
    if target_role is None:
        raise NotFound("no such member")
    if ROLE_RANK[target_role] >= ROLE_RANK[actor_role]:
        raise Forbidden(f"a {actor_role.value} cannot remove a {target_role.value}")
    await session.exec(  # type: ignore[call-overload]
        delete(Membership).where(
            col(Membership.group_id) == group_id, col(Membership.user_id) == target_id
        )
    )


async def set_role(
    session: AsyncSession, group_id: int, actor_id: int, target_id: int, role: Role
) -> None:
    """Owner only: make a member admin or member, or hand over ownership."""
    group, _ = await require_member(session, group_id, actor_id, at_least=Role.owner)
    target = await session.get(Membership, (group_id, target_id))
    if target is None:
        raise NotFound("no such member")
    if target_id == actor_id:
        raise Conflict("choose another member to take a role")
    if role is Role.owner:
        me = await session.get(Membership, (group_id, actor_id))
        assert me is not None
        me.role = Role.admin
        group.owner_id = target_id
        session.add_all([me, group])
    target.role = role
    session.add(target)
    await session.flush()


async def delete_group(session: AsyncSession, group_id: int, actor_id: int) -> list[int]:
    """Delete a group (owner only); returns the ids of its former members."""
    group, _ = await require_member(session, group_id, actor_id, at_least=Role.owner)
    former = await member_ids(session, group_id)
    await session.delete(group)
    await session.flush()
    return former
