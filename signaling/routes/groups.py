"""REST: groups, members, roles, invites.

Membership changes are published on the bus (``group:<id>`` and
``user:<id>`` topics) so that live WebSocket sessions on every node follow
them: a member who leaves stops receiving the group's events at once.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from groups import service
from groups.models import Group, Role
from signaling import push_hooks
from signaling.deps import AppState, Db, State, UserId
from signaling.limits import max_members_for_group
from signaling.routes.params import GroupId, MemberId

router = APIRouter(prefix="/api", tags=["groups"])


class GroupCreate(BaseModel):
    name: str = Field(max_length=256)


class RoleChange(BaseModel):
    role: Role


def group_json(group: Group, role: Role | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "id": group.id, "name": group.name, "owner_id": group.owner_id,
        "created_at": group.created_at, "room": f"group:{group.id}",
    }
    if role is not None:
        body["role"] = role.value
    return body


async def announce_membership(state: AppState, group_id: int, user_id: int, change: str) -> None:
    """Tell live sessions that ``user_id`` joined, left, or changed role in ``group_id``."""
    event = {"type": "membership", "group_id": group_id, "user_id": user_id, "change": change}
    await state.bus.publish(f"user:{user_id}", event)
    await state.bus.publish(f"group:{group_id}", event)


@router.post("/groups", status_code=201)
async def create_group(
    body: GroupCreate, user_id: UserId, state: State, db: Db
) -> dict[str, object]:
    group = await service.create_group(db, user_id, body.name, state.clock())
    await db.commit()
    assert group.id is not None
    await announce_membership(state, group.id, user_id, "joined")
    return group_json(group, Role.owner)


@router.get("/groups")
async def list_groups(user_id: UserId, db: Db) -> dict[str, object]:
    return {"groups": [group_json(g, r) for g, r in await service.my_groups(db, user_id)]}


@router.get("/groups/{group_id}")
async def get_group(group_id: GroupId, user_id: UserId, db: Db) -> dict[str, object]:
    group, role = await service.require_member(db, group_id, user_id)
    members = await service.members(db, group_id)
    return {
        **group_json(group, role),
        "members": [
            {"user_id": m.user_id, "username": m.username, "display_name": m.display_name,
             "role": m.role, "joined_at": m.joined_at}
            for m in members
        ],
    }


@router.delete("/groups/{group_id}", status_code=204)
async def delete_group(group_id: GroupId, user_id: UserId, state: State, db: Db) -> Response:
    former = await service.delete_group(db, group_id, user_id)
    await db.commit()
    for member in former:
        await announce_membership(state, group_id, member, "left")
    return Response(status_code=204)


@router.post("/groups/{group_id}/invites", status_code=201)
async def create_invite(
    group_id: GroupId, user_id: UserId, state: State, db: Db
) -> dict[str, object]:
    invite = await service.create_invite(
        db, group_id, user_id, state.clock(), state.settings.invite_ttl_s
    )
    return {"code": invite.code, "group_id": group_id, "expires_at": invite.expires_at}


@router.post("/invites/{code}/accept")
async def accept_invite(code: str, user_id: UserId, state: State, db: Db) -> dict[str, object]:
    now = state.clock()
    limit = await max_members_for_group(state, db, code, now)
    group, membership = await service.accept_invite(db, code, user_id, now, max_members=limit)
    await db.commit()
    assert group.id is not None
    await announce_membership(state, group.id, user_id, "joined")
    await push_hooks.invite_accepted(state, group.id, user_id)
    return {"group": group_json(group, Role(membership.role)), "role": membership.role}


@router.post("/groups/{group_id}/leave", status_code=204)
async def leave_group(group_id: GroupId, user_id: UserId, state: State, db: Db) -> Response:
    await service.leave_group(db, group_id, user_id)
    await db.commit()
    await announce_membership(state, group_id, user_id, "left")
    return Response(status_code=204)


@router.delete("/groups/{group_id}/members/{member_id}", status_code=204)
async def remove_member(
    group_id: GroupId, member_id: MemberId, user_id: UserId, state: State, db: Db
) -> Response:
    await service.remove_member(db, group_id, user_id, member_id)
    await db.commit()
    await announce_membership(state, group_id, member_id, "left")
    return Response(status_code=204)


@router.put("/groups/{group_id}/members/{member_id}/role")
async def set_role(
    group_id: GroupId, member_id: MemberId, body: RoleChange, user_id: UserId, state: State,
    db: Db
) -> dict[str, object]:
    await service.set_role(db, group_id, user_id, member_id, body.role)
    await db.commit()  # before the event: clients re-read the group when they get it
    await announce_membership(state, group_id, member_id, "role")
    return {"group_id": group_id, "user_id": member_id, "role": body.role.value}
