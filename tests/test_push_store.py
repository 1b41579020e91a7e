"""Device tokens and muted categories in SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from common.db import SessionFactory, session_scope
from common.errors import BadRequest, NotFound
from groups.push import store
from groups.push.messages import Category
from tests.db_support import migrated_with_users
from tests.push_support import android_token, ios_token


@dataclass
class Env:
    sessions: SessionFactory
    ann: int
    bob: int


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[Env]:
    engine, sessions, ids = await migrated_with_users(database_url, "ann", "bob")
    yield Env(sessions, *ids)
    await engine.dispose()


async def test_register_is_idempotent_and_the_newest_owner_wins(env: Env) -> None:
    async with session_scope(env.sessions) as s:
        await store.register_device(s, env.ann, "ios", ios_token(1).upper(), 1.0)
        await store.register_device(s, env.ann, "ios", ios_token(1), 2.0)
        await store.register_device(s, env.ann, "android", android_token(1), 2.0)
    async with session_scope(env.sessions) as s:
        devices = await store.user_devices(s, env.ann)
        assert [(d.platform, d.token, d.last_seen_at) for d in devices] == [
            ("ios", ios_token(1), 2.0), ("android", android_token(1), 2.0)]
        # the phone changes hands: bob registers the same token
        await store.register_device(s, env.bob, "ios", ios_token(1), 3.0)
    async with env.sessions() as s:
        assert [d.token for d in await store.user_devices(s, env.ann)] == [android_token(1)]
        assert [d.token for d in await store.user_devices(s, env.bob)] == [ios_token(1)]


async def test_bad_tokens_store_nothing(env: Env) -> None:
    for platform, token in (("ios", "nothex"), ("android", "x"), ("fax", ios_token(1))):
        with pytest.raises(BadRequest):
            async with session_scope(env.sessions) as s:
                await store.register_device(s, env.ann, platform, token, 1.0)
    async with env.sessions() as s:
        assert await store.devices_for(s, [env.ann, env.bob]) == []


async def test_remove_only_your_own_token(env: Env) -> None:
    async with session_scope(env.sessions) as s:
        await store.register_device(s, env.ann, "ios", ios_token(1), 1.0)
    with pytest.raises(NotFound):
        async with session_scope(env.sessions) as s:
            await store.remove_device(s, env.bob, ios_token(1))
    async with session_scope(env.sessions) as s:
        await store.remove_device(s, env.ann, ios_token(1))
    async with env.sessions() as s:
        assert await store.user_devices(s, env.ann) == []


async def test_muted_categories(env: Env) -> None:
    async with session_scope(env.sessions) as s:
        assert await store.muted_categories(s, env.ann) == frozenset()
        await store.set_muted(s, env.ann, ["place", "call"], 1.0)
    with pytest.raises(BadRequest, match="unknown push category"):
        async with session_scope(env.sessions) as s:
            await store.set_muted(s, env.ann, ["sos", "everything"], 2.0)
    async with session_scope(env.sessions) as s:
        assert await store.muted_categories(s, env.ann) == {Category.place, Category.call}
        assert await store.users_muting(s, [env.ann, env.bob], Category.call) == {env.ann}
        assert await store.users_muting(s, [env.ann, env.bob], Category.sos) == set()
        await store.set_muted(s, env.ann, [], 3.0)
        assert await store.muted_categories(s, env.ann) == frozenset()


async def test_delete_tokens(env: Env) -> None:
    async with session_scope(env.sessions) as s:
        await store.register_device(s, env.ann, "ios", ios_token(1), 1.0)
        await store.register_device(s, env.bob, "ios", ios_token(2), 1.0)
    async with session_scope(env.sessions) as s:
        assert await store.delete_tokens(s, [ios_token(1), ios_token(9)]) == 1
        assert await store.delete_tokens(s, []) == 0
    async with env.sessions() as s:
        assert [d.token for d in await store.devices_for(s, [env.ann, env.bob])] == [ios_token(2)]
