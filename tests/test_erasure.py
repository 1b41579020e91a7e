"""groups.erasure against the real databases: who inherits a group, and what goes."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from common.db import SessionFactory, make_engine, make_session_factory, migrate, session_scope
from common.errors import NotFound
from groups.erasure import delete_account, export_account, successor
from groups.models import Group, Membership, Role, User


async def _world(database_url: str) -> tuple[AsyncEngine, SessionFactory]:
    engine = make_engine(database_url)
    await migrate(engine)
    return engine, make_session_factory(engine)


@pytest.mark.parametrize(
    ("others", "heir"),
    [
        ([], None),
        ([("b", "member", 20.0), ("c", "member", 10.0)], "c"),  # longest-standing member
        ([("b", "member", 5.0), ("c", "admin", 30.0), ("d", "admin", 20.0)], "d"),  # admins first
        ([("b", "member", 10.0), ("c", "member", 10.0)], "b"),  # a tie: the lower id
    ],
)
async def test_successor_and_hand_over(database_url: str, others: list[tuple[str, str, float]],
                                       heir: str | None) -> None:
    engine, sessions = await _world(database_url)
    try:
        async with session_scope(sessions) as s:
            owner = User(username="owner", display_name="O", password_hash="x", created_at=0.0)
            s.add(owner)
            await s.flush()
            assert owner.id is not None
            group = Group(name="g", owner_id=owner.id, created_at=0.0)
            s.add(group)
            await s.flush()
            assert group.id is not None
            s.add(Membership(group_id=group.id, user_id=owner.id, role=Role.owner,
                             joined_at=0.0))
            ids = {}
            for name, role, joined in others:
                user = User(username=name, display_name=name, password_hash="x",
                            created_at=0.0)
                s.add(user)
                await s.flush()
                assert user.id is not None
                ids[name] = user.id
                s.add(Membership(group_id=group.id, user_id=user.id, role=role,
                                 joined_at=joined))
            await s.flush()
            found = await successor(s, group.id, owner.id)
            assert (found.user_id if found else None) == (ids[heir] if heir else None)
            done = await delete_account(s, owner.id)
            group_id, owner_id = group.id, owner.id
        async with session_scope(sessions) as s:
            left = await s.get(Group, group_id)
            if heir is None:
                assert left is None and done.deleted_groups == [group_id]
            else:
                assert left is not None and left.owner_id == ids[heir]
                heir_row = await s.get(Membership, (group_id, ids[heir]))
                assert heir_row is not None and heir_row.role == Role.owner
                assert done.new_owners == {group_id: ids[heir]}
            assert (await s.exec(select(User).where(User.id == owner_id))).first() is None
            with pytest.raises(NotFound):
                await export_account(s, owner_id)
            with pytest.raises(NotFound):
                await delete_account(s, owner_id)
    finally:
        await engine.dispose()
