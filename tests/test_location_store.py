"""History, retention, sharing, places and events against real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlmodel import func, select

from common.db import SessionFactory
from common.errors import BadRequest, Forbidden, NotFound
from groups.geo import destination
from groups.location import store
from groups.location.fixes import Fix
from groups.location.models import GroupEvent, LocationPoint
from groups.models import Group, Membership, Role
from tests.db_support import migrated_with_users

NOW = 1_800_000_000.0
DAY = 86_400.0


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[SessionFactory]:
    engine, factory, ids = await migrated_with_users(database_url, "owner", "member", "stranger")
    assert ids == [1, 2, 3]
    async with factory() as db:
        db.add(Group(id=10, name="crew", owner_id=1, created_at=NOW))
        db.add(Group(id=20, name="other", owner_id=3, created_at=NOW))
        await db.flush()
        db.add(Membership(group_id=10, user_id=1, role=Role.owner, joined_at=NOW))
        db.add(Membership(group_id=10, user_id=2, role=Role.member, joined_at=NOW))
        db.add(Membership(group_id=20, user_id=3, role=Role.owner, joined_at=NOW))
        await db.commit()
    yield factory
    await engine.dispose()


async def _count(factory: SessionFactory, model: type[LocationPoint] | type[GroupEvent]) -> int:
    async with factory() as db:
        return int((await db.exec(select(func.count()).select_from(model))).one())


async def test_history_is_geojson_linestring_with_timestamps(sessions: SessionFactory) -> None:
    async with sessions() as db:
        for i in range(5):
            await store.record_fix(db, 2, Fix(52.5 + i * 0.001, 13.4, 8.0, NOW + i * 10), NOW + i)
        await store.record_fix(db, 2, Fix(0.0, 0.0, 5.0, NOW - 5), NOW + 6)  # late, out of order
        await db.commit()
    async with sessions() as db:
        feature = await store.history(db, 10, 1, 2, NOW - 10, NOW + 25)
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "LineString"
        assert feature["geometry"]["coordinates"][0] == [0.0, 0.0]
        assert feature["geometry"]["coordinates"][1] == [13.4, 52.5]
        assert feature["properties"]["timestamps"] == [NOW - 5, NOW, NOW + 10, NOW + 20]
        last = await store.last_fix(db, 2)  # the late fix did not move the last position back
        assert last is not None and last.ts == NOW + 40
        with pytest.raises(NotFound):
            await store.history(db, 10, 3, 2, NOW - 10, NOW + 25)  # stranger
        with pytest.raises(BadRequest):
            await store.history(db, 10, 1, 2, NOW, NOW - 1)


async def test_retention_deletes_old_points_with_group_override(sessions: SessionFactory) -> None:
    async with sessions() as db:
        for uid in (1, 2, 3):
            for age_days in (1, 10, 40, 100):
                await store.record_fix(db, uid, Fix(1.0, 1.0, 5.0, NOW - age_days * DAY), NOW)
        db.add(GroupEvent(group_id=10, user_id=1, kind="sos", ts=NOW - 40 * DAY))
        db.add(GroupEvent(group_id=20, user_id=3, kind="sos", ts=NOW - 40 * DAY))
        await db.commit()
    async with sessions() as db:
        # group 20 (user 3's) keeps 365 days by its plan; everyone else the 30-day default
        deleted = await store.apply_retention(db, NOW, 30, {20: NOW - 365 * DAY})
        await db.commit()
    assert deleted == 4
    async with sessions() as db:
        rows = await db.exec(select(LocationPoint.user_id, LocationPoint.ts))
        kept = sorted((uid, round((NOW - ts) / DAY)) for uid, ts in rows.all())
    assert kept == [(1, 1), (1, 10), (2, 1), (2, 10), (3, 1), (3, 10), (3, 40), (3, 100)]
    assert await _count(sessions, GroupEvent) == 1  # group 20's old SOS stays


async def test_sharing_pause_and_approximate(sessions: SessionFactory) -> None:
    async with sessions() as db:
        await store.record_fix(db, 2, Fix(52.52, 13.405, 5.0, NOW), NOW)
        await db.commit()
        view = {e["user_id"]: e for e in await store.group_locations(db, 10, 1)}
        assert view[2]["location"]["lat"] == 52.52 and view[1]["status"] == "unknown"
        await store.set_sharing(db, 10, 2, False, "approximate", NOW)
        view = {e["user_id"]: e for e in await store.group_locations(db, 10, 1)}
        assert view[2]["location"]["lat"] != 52.52 and view[2]["location"]["accuracy_m"] >= 1000
        own = {e["user_id"]: e for e in await store.group_locations(db, 10, 2)}
        assert own[2]["location"]["lat"] == 52.52  # you always see yourself precisely
        await store.set_sharing(db, 10, 2, True, "precise", NOW)
        view = {e["user_id"]: e for e in await store.group_locations(db, 10, 1)}
        assert view[2] == {"user_id": 2, "precision": "precise", "status": "paused",
                           "location": None}
        feature = await store.history(db, 10, 1, 2, NOW - 10, NOW + 10)
        assert feature["properties"]["paused"] and feature["geometry"]["coordinates"] == []
        with pytest.raises(NotFound):
            await store.group_locations(db, 10, 3)
        with pytest.raises(BadRequest):
            await store.set_sharing(db, 10, 2, False, "exact", NOW)


BAD_PLACES = [
    ("home", 52.5, 13.4, 0),
    ("home", 52.5, 13.4, 24.9),
    ("home", 52.5, 13.4, 50_001),
    ("home", 52.5, 13.4, 1e12),
    ("home", 52.5, 13.4, float("nan")),
    ("home", 91.0, 13.4, 100),
    ("home", 52.5, float("inf"), 100),
    ("", 52.5, 13.4, 100),
    ("x" * 65, 52.5, 13.4, 100),
]


@pytest.mark.parametrize(("name", "lat", "lon", "radius"), BAD_PLACES)
async def test_bad_places_are_rejected_and_nothing_stored(
    sessions: SessionFactory, name: str, lat: float, lon: float, radius: float
) -> None:
    async with sessions() as db:
        with pytest.raises(BadRequest):
            await store.create_place(db, 10, 1, name, lat, lon, radius, NOW)
        assert await store.list_places(db, 10, 1) == []


async def test_places_admin_only_and_walk_produces_events(sessions: SessionFactory) -> None:
    async with sessions() as db:
        with pytest.raises(Forbidden):
            await store.create_place(db, 10, 2, "home", 52.52, 13.405, 150, NOW)
        place = await store.create_place(db, 10, 1, " home ", 52.52, 13.405, 150, NOW)
        await db.commit()
        assert place.name == "home"
        kinds = []
        for i, distance in enumerate([600, 300, 100, 0, 160, 150, 300, 600, 0]):
            lat, lon = destination(52.52, 13.405, 90, distance)
            fix = Fix(lat, lon, 10.0, NOW + i * 30)
            await store.record_fix(db, 2, fix, NOW + i * 30)
            kinds += [e.kind for e in await store.evaluate_places(db, 2, fix, NOW + i * 30)]
        await db.commit()
        assert kinds == ["enter", "leave", "enter"]
        sos = await store.add_sos(db, 2, NOW + 1_000)
        await db.commit()
        assert [e.group_id for e in sos] == [10] and sos[0].lat == pytest.approx(52.52)
        events = [store.event_json(e) for e in await store.list_events(db, 10, 1)]
        assert [e["kind"] for e in events] == ["sos", "enter", "leave", "enter"]
        assert events[1]["place"] == {"id": place.id, "name": "home"}
        with pytest.raises(NotFound):
            await store.list_events(db, 10, 3)
        assert place.id is not None
        with pytest.raises(Forbidden):
            await store.delete_place(db, 10, 2, place.id)
        await store.delete_place(db, 10, 1, place.id)
        await db.commit()
        assert await store.list_places(db, 10, 1) == []
        events = [store.event_json(e) for e in await store.list_events(db, 10, 1)]
        assert events[1]["place"] == {"id": None, "name": "home"}  # history survives deletion
