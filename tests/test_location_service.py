"""Location use cases with the bus: what a group hears of a member's fixes and places.

Real SQLite and PostgreSQL, the real in-process bus. A paused member's fixes
run no geofence for that group (no ``place_event``, nothing in ``/events``);
an approximate member's neither; the first fix after sharing precisely again
sets the place state silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from common.bus import LocalBus, Subscription
from common.db import SessionFactory
from groups.geo import destination
from groups.location import service, store
from groups.location.fixes import Fix
from groups.location.models import Precision
from groups.models import Group, Membership, Role
from tests.db_support import migrated_with_users

NOW = 1_800_000_000.0
HOME = (52.52, 13.405)
PLACE_RADIUS_M = 150.0
# a walk in, out, in and out of "home" (metres east of its centre)
WALK_M = [600.0, 0.0, 600.0, 0.0, 600.0]


@dataclass
class Env:
    sessions: SessionFactory
    bus: LocalBus
    watcher: Subscription  # what a member of group 10 (and 20) would hear

    async def fix(self, step: int, metres: float) -> list[dict[str, Any]]:
        lat, lon = destination(*HOME, 90, metres)
        ts = NOW + step * 30
        return await service.publish_fix(self.sessions, self.bus, 2, Fix(lat, lon, 10.0, ts), ts)

    async def heard(self) -> list[dict[str, Any]]:
        """Everything published so far (the local bus delivers as it publishes)."""
        out = []
        while True:
            try:
                got = await asyncio.wait_for(self.watcher.get(), 0.05)
            except TimeoutError:
                return out
            assert got is not None
            out.append(got[1])

    async def stored_kinds(self, group_id: int) -> list[str]:
        async with self.sessions() as db:
            return [e.kind for e in await store.list_events(db, group_id, 1)]


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[Env]:
    engine, sessions, ids = await migrated_with_users(database_url, "owner", "member")
    assert ids == [1, 2]
    async with sessions() as db:
        for gid in (10, 20):
            db.add(Group(id=gid, name=f"g{gid}", owner_id=1, created_at=NOW))
        await db.flush()
        for gid in (10, 20):
            db.add(Membership(group_id=gid, user_id=1, role=Role.owner, joined_at=NOW))
            db.add(Membership(group_id=gid, user_id=2, role=Role.member, joined_at=NOW))
        await db.flush()
        for gid in (10, 20):
            await store.create_place(db, gid, 1, "home", *HOME, PLACE_RADIUS_M, NOW)
        await db.commit()
    bus = LocalBus()
    watcher = bus.subscription()
    await watcher.add("group:10", "group:20")
    yield Env(sessions, bus, watcher)
    await watcher.close()
    await engine.dispose()


def place_events(messages: list[dict[str, Any]], group_id: int) -> list[str]:
    return [m["kind"] for m in messages
            if m["type"] == "place_event" and m["group_id"] == group_id]


async def test_precise_sharing_announces_places(env: Env) -> None:
    for step, metres in enumerate(WALK_M):
        await env.fix(step, metres)
    heard = await env.heard()
    assert place_events(heard, 10) == place_events(heard, 20) == ["enter", "leave", "enter",
                                                                  "leave"]
    assert await env.stored_kinds(10) == ["leave", "enter", "leave", "enter"]  # newest first


@pytest.mark.parametrize(("paused", "precision"), [(True, "precise"), (False, "approximate"),
                                                   (True, "approximate")])
async def test_no_place_events_while_paused_or_approximate(env: Env, paused: bool,
                                                            precision: str) -> None:
    await env.fix(0, 600.0)  # outside: the state is set silently
    await env.heard()
    await service.change_sharing(env.sessions, env.bus, 10, 2, paused, precision, NOW)
    returned = []
    for step, metres in enumerate(WALK_M[1:], start=1):
        returned += await env.fix(step, metres)
    heard = await env.heard()
    assert place_events(heard, 10) == [], "the group heard where a hidden member went"
    assert await env.stored_kinds(10) == [], "hidden moves were stored in /events"
    assert [m["group_id"] for m in returned] == [20, 20, 20, 20]
    assert place_events(heard, 20) == ["enter", "leave", "enter", "leave"]  # other group: as ever
    if paused:
        assert not [m for m in heard if m["type"] == "member_location" and m["group_id"] == 10]

    # Sharing precisely again: the first fix sets the state silently (what happened
    # meanwhile is not announced late), later moves are announced.
    await service.change_sharing(env.sessions, env.bus, 10, 2, False, "precise", NOW)
    await env.heard()
    await env.fix(10, 0.0)  # inside home, and it was last seen outside before the pause
    assert place_events(await env.heard(), 10) == []
    await env.fix(11, 600.0)
    assert place_events(await env.heard(), 10) == ["leave"]
    assert await env.stored_kinds(10) == ["leave"]


def test_which_sharing_runs_geofences() -> None:
    assert store.places_evaluated(store.Sharing())
    assert not store.places_evaluated(store.Sharing(paused=True))
    assert not store.places_evaluated(store.Sharing(precision=Precision.approximate))
