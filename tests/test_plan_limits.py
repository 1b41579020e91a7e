"""Plan limits on location features, enforced at the edge: places and history length."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.settings import Settings
from tests.server_helpers import LiveServer, auth, live_server

DAY_S = 86_400.0
LAT, LON = 47.3769, 8.5417


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    async with live_server(settings) as s:
        yield s


async def grant(server: LiveServer, username: str, plan: str) -> None:
    from billing.admin import grant_plan

    async with server.app_state.sessions() as db:
        await grant_plan(db, username, plan, server.app_state.plans, server.app_state.clock())
        await db.commit()


async def test_free_plan_allows_two_places_until_an_upgrade(server: LiveServer) -> None:
    owner, _ = await server.register("owner")
    group = await server.group_with(owner)
    for n in range(2):
        r = await server.http.post(f"/api/groups/{group}/places", headers=auth(owner),
                                   json={"name": f"P{n}", "lat": LAT, "lon": LON, "radius_m": 100})
        assert r.status_code == 201, r.text
    r = await server.http.post(f"/api/groups/{group}/places", headers=auth(owner),
                               json={"name": "P2", "lat": LAT, "lon": LON, "radius_m": 100})
    assert r.status_code == 403
    assert r.json()["error"] == "limit_exceeded" and r.json()["detail"]["limit"] == "max_places"
    places = (await server.http.get(f"/api/groups/{group}/places", headers=auth(owner))).json()
    assert [p["name"] for p in places["places"]] == ["P0", "P1"]  # nothing stored
    await grant(server, "owner", "plus")
    r = await server.http.post(f"/api/groups/{group}/places", headers=auth(owner),
                               json={"name": "P2", "lat": LAT, "lon": LON, "radius_m": 100})
    assert r.status_code == 201, r.text


async def test_history_reads_stop_at_the_plan_window(server: LiveServer) -> None:
    owner, user = await server.register("owner")
    group = await server.group_with(owner)
    now = server.app_state.clock()
    for age_days in (3.0, 2.0, 0.5, 0.1):
        r = await server.http.post("/api/locations", headers=auth(owner), json={
            "lat": LAT + age_days / 100, "lon": LON, "accuracy_m": 5, "ts": now - age_days * DAY_S,
        })
        assert r.status_code == 200, r.text
    url = f"/api/groups/{group}/members/{user['id']}/history"
    window = {"from": now - 4 * DAY_S, "to": now}

    async def times() -> list[float]:
        r = await server.http.get(url, params=window, headers=auth(owner))
        assert r.status_code == 200, r.text
        return list(r.json()["properties"]["timestamps"])

    assert len(await times()) == 2  # free: 1 day of history
    await grant(server, "owner", "plus")
    assert len(await times()) == 4  # plus: 30 days
