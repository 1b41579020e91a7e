"""A migrated database with a few users, for tests of stores and services."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import SessionFactory, make_engine, make_session_factory, migrate, session_scope
from groups.models import User


async def migrated_with_users(
    url: str, *usernames: str
) -> tuple[AsyncEngine, SessionFactory, list[int]]:
    """Migrate ``url`` and add one user per name (display name: the name, titled).

    Returns the engine (dispose it), the session factory and the users' ids.
    """
    engine = make_engine(url)
    await migrate(engine)
    sessions = make_session_factory(engine)
    ids: list[int] = []
    async with session_scope(sessions) as session:
        for name in usernames:
            user = User(username=name, display_name=name.title(), password_hash="x",
                        created_at=0.0)
            session.add(user)
            await session.flush()
            assert user.id is not None
            ids.append(user.id)
    return engine, sessions, ids
