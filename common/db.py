"""Database engine, session factory and migrations.

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) when the URL says so. The
schema is owned by Alembic migrations in ``common/migrations``; they run at
start-up (``migrate``), never ``create_all``. Alembic (with Mako, ~10 MB)
is imported only when the database is behind: a node starting on a database
already at the head revision (``head_revision``, read from the migration
files) checks ``alembic_version`` with one query and leaves it at that.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

SessionFactory = async_sessionmaker[AsyncSession]

MIGRATION_LOCK_KEY = 0x44_69_73_63_6F_4D_69_67  # "DiscoMig": one bigint shared by every node


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` and ``sqlite://`` URLs; use the async drivers."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    return url


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> AsyncEngine:
    url = normalise_url(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


def make_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def session_scope(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits on success and rolls back on error."""
    async with factory() as session, session.begin():
        yield session


_REVISION_LINE = re.compile(r"""^(down_revision|revision)\s*(?::[^=]*)?=\s*["']?(\w+)""", re.M)


def head_revision(versions: Path = MIGRATIONS_DIR / "versions") -> str:
    """The newest migration's id, read from the files (what ``alembic heads`` says, without
    importing Alembic): the one revision no other names as its ``down_revision``."""
    revisions, parents = set(), set()
    for path in versions.glob("*.py"):
        found = dict(reversed(_REVISION_LINE.findall(path.read_text(encoding="utf-8"))))
        if "revision" in found:
            revisions.add(found["revision"])
        if found.get("down_revision") not in (None, "None"):
            parents.add(found["down_revision"])
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"migrations in {versions} have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


async def at_head(engine: AsyncEngine) -> bool:
    """Is the database at the newest migration already? (False if it has no schema yet.)"""
    async with engine.connect() as conn:
        try:
            rows = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).all()
        except DBAPIError:  # no alembic_version table: a new database (or none: said later)
            return False
    return [r[0] for r in rows] == [head_revision()]


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending migration (on PostgreSQL, one node at a time).

    On SQLite, foreign keys are off while migrations run (a migration that
    rebuilds a table drops the old one, and with foreign keys on that drop
    would cascade into every referencing table) and checked once afterwards.
    The pragma only takes effect outside a transaction, hence its own step.
    """
    if await at_head(engine):
        return
    if is_sqlite(engine):
        await _migrate_sqlite(engine)
        return
    # A session-level lock on its own connection: held across the upgrade's
    # transaction, released when we say so or when the connection dies.
    async with engine.connect() as lock_conn:
        await lock_conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade)
        finally:
            await lock_conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
            await lock_conn.commit()


async def _migrate_sqlite(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        await conn.commit()
        try:
            async with conn.begin():
                await conn.run_sync(_upgrade)
                broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise RuntimeError(f"migration left dangling foreign keys: {broken[:5]}")
        finally:
            await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            await conn.commit()


async def migration_lock_held(engine: AsyncEngine) -> bool:
    """Whether any session holds the migration lock now (PostgreSQL only)."""
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            f"AND ((classid::bigint << 32) | objid::bigint) = {MIGRATION_LOCK_KEY}"
        )
        return bool(result.scalar_one())
