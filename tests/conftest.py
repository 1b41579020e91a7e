"""Shared fixtures: databases (SQLite and real PostgreSQL), Redis, settings."""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from tests.billing_support import FakeStripe, billing_settings, fake_stripe
from tests.server_helpers import LiveServer, live_server
from tests.services import POSTGRES_URL, REDIS_URL, missing, port_open
from tests.test_client_support import media_settings


def _pg_available() -> bool:
    parsed = urllib.parse.urlparse(POSTGRES_URL)
    return port_open(parsed.hostname or "127.0.0.1", parsed.port or 5432)


async def _create_pg_database() -> str:
    if not _pg_available():
        missing(f"PostgreSQL at {POSTGRES_URL}")
    import asyncpg

    name = "disco_t_" + secrets.token_hex(6)
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parsed = urllib.parse.urlparse(POSTGRES_URL)
    return urllib.parse.urlunparse(parsed._replace(path="/" + name))


async def _drop_pg_database(url: str) -> None:
    import asyncpg

    name = urllib.parse.urlparse(url).path.lstrip("/")
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    url = await _create_pg_database()
    yield url
    await _drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'disco.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test using this runs twice: on SQLite and on a fresh real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'disco.db'}"
        return
    url = await _create_pg_database()
    yield url
    await _drop_pg_database(url)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """The test Redis; pair it with ``redis_prefix`` so suites sharing it never meet."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception:
        missing(f"Redis at {REDIS_URL}")
    finally:
        await client.aclose()
    yield REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A channel and key prefix of this test's own; its keys are deleted afterwards.

    Several suites (CI, developers, helpers) may share one Redis: nothing is
    flushed, and no test hears another's messages.
    """
    import redis.asyncio as aioredis

    prefix = f"disco-test-{secrets.token_hex(6)}:"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    yield Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'disco.db'}",
        jwt_secret="test-secret-" + secrets.token_hex(16),
        upload_dir=tmp_path / "uploads",
    )


@pytest.fixture
def stripe_api() -> Iterator[FakeStripe]:
    """A local stand-in for Stripe's API (``tests.billing_support.FakeStripe``)."""
    with fake_stripe() as fake:
        yield fake


@pytest.fixture
async def billing_server(settings: Settings, tmp_path: Path, database_url: str,
                         stripe_api: FakeStripe) -> AsyncIterator[LiveServer]:
    """A live server with plans and Stripe (the stand-in), on SQLite and on PostgreSQL."""
    async with live_server(billing_settings(settings, tmp_path, database_url,
                                            stripe_api.url)) as server:
        yield server


@pytest.fixture
async def media_server(settings: Settings) -> AsyncIterator[LiveServer]:
    """A live server whose media offers only 127.0.0.1 as its ICE candidate."""
    async with live_server(media_settings(settings)) as server:
        yield server
