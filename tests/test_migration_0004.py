"""Migration 0004 on a database with data: rows, ids and references survive the
SQLite table rebuild, and afterwards a deleted user's id is never handed out again."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from common.db import _alembic_config, make_engine, migrate


def _upgrade_to(connection: Connection, revision: str) -> None:
    command.upgrade(_alembic_config(connection), revision)


async def test_upgrade_keeps_rows_and_stops_id_reuse(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_to, "0003")
            await conn.execute(text(
                "INSERT INTO users (id, username, display_name, password_hash, created_at) "
                "VALUES (1, 'ann', 'Ann', 'x', 1.0), (2, 'bob', 'Bob', 'x', 2.0)"))
            await conn.execute(text(
                "INSERT INTO groups (id, name, owner_id, created_at) VALUES (7, 'g', 1, 3.0)"))
            await conn.execute(text(
                "INSERT INTO memberships (group_id, user_id, role, joined_at) "
                "VALUES (7, 1, 'owner', 3.0), (7, 2, 'member', 4.0)"))
        await migrate(engine)
        async with engine.begin() as conn:
            users = (await conn.execute(text(
                "SELECT id, username, token_gen FROM users ORDER BY id"))).all()
            assert [tuple(u) for u in users] == [(1, "ann", 0), (2, "bob", 0)]
            members = (await conn.execute(text(
                "SELECT user_id FROM memberships ORDER BY user_id"))).scalars().all()
            assert list(members) == [1, 2], "the users rebuild cascaded into memberships"
            await conn.execute(text("DELETE FROM users WHERE id = 2"))
            if engine.dialect.name == "postgresql":  # ids were inserted by hand above
                await conn.execute(text(
                    "SELECT setval(pg_get_serial_sequence('users', 'id'), 2)"))
            await conn.execute(text(
                "INSERT INTO users (username, display_name, password_hash, created_at) "
                "VALUES ('cy', 'Cy', 'x', 5.0)"))
            new_id = (await conn.execute(text(
                "SELECT id FROM users WHERE username = 'cy'"))).scalar_one()
            assert new_id == 3, f"user id {new_id} reused after a delete"
            # foreign keys are on again after migrating
            gone = (await conn.execute(text(
                "SELECT count(*) FROM memberships WHERE user_id = 2"))).scalar_one()
            assert gone == 0
    finally:
        await engine.dispose()
