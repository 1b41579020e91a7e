"""Migrations build the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect

from common.db import make_engine, migrate
from groups.models import SQLModel


async def test_migrations_match_models(database_url: str) -> None:
    import billing.models  # noqa: F401  (register every table)
    import groups.location.models
    import groups.push.models  # noqa: F401

    engine = make_engine(database_url)
    await migrate(engine)
    await migrate(engine)  # idempotent: a second start changes nothing
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        columns = await conn.run_sync(
            lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)} for t in tables}
        )
    await engine.dispose()
    for table in SQLModel.metadata.sorted_tables:
        assert table.name in tables, f"migration does not create {table.name}"
        assert {c.name for c in table.columns} == columns[table.name], table.name


def test_head_revision_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from common.db import MIGRATIONS_DIR, head_revision

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [head_revision()]


async def test_migrate_at_head_is_one_query(database_url: str) -> None:
    from common.db import at_head

    engine = make_engine(database_url)
    try:
        assert not await at_head(engine)  # a new database: no alembic_version yet
        await migrate(engine)
        assert await at_head(engine)
        await migrate(engine)  # nothing to do, and it says so without Alembic
    finally:
        await engine.dispose()
