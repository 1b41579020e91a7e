"""Group location live over the WebSocket: who receives what, once, and when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from common.settings import Settings
from tests.server_helpers import LiveServer, auth, live_server

LAT, LON = 60.1699, 24.9384  # Helsinki
M_PER_DEG_LAT = 111_195.0


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    async with live_server(settings) as s:
        yield s


async def test_positions_places_and_leaving(server: LiveServer) -> None:
    owner, _ = await server.register("owner")
    rider, rider_user = await server.register("rider")
    group = await server.group_with(owner, rider)
    r = await server.http.post(f"/api/groups/{group}/places", headers=auth(owner),
                               json={"name": "Base", "lat": LAT, "lon": LON, "radius_m": 150})
    assert r.status_code == 201, r.text
    watch, ride = await server.connect(owner), await server.connect(rider)

    await ride.request({"type": "location", "lat": LAT + 1000 / M_PER_DEG_LAT, "lon": LON,
                        "accuracy_m": 10}, "location_ok")
    seen = await watch.expect("member_location")
    assert seen["user_id"] == rider_user["id"] and seen["group_id"] == group

    # Arriving at the place: one enter event for each member, the rider included.
    await ride.request({"type": "location", "lat": LAT, "lon": LON, "accuracy_m": 10},
                       "location_ok")
    for ws in (watch, ride):
        event = await ws.expect("place_event")
        assert (event["kind"], event["place"]["name"]) == ("enter", "Base")
    await asyncio.sleep(0.3)
    for ws in (watch, ride):
        with pytest.raises(TimeoutError):
            await ws.expect("place_event", timeout_s=0.3)  # exactly once
    assert not [m for m in ride.backlog if m["type"] == "member_location"]  # no self-echo

    # The rider leaves the group: their next fixes reach nobody there, and the
    # group's map no longer lists them.
    r = await server.http.post(f"/api/groups/{group}/leave", headers=auth(rider))
    assert r.status_code == 204
    await ride.expect("membership")
    watch.backlog.clear()
    await ride.request({"type": "location", "lat": LAT + 0.01, "lon": LON, "accuracy_m": 10},
                       "location_ok")
    with pytest.raises(TimeoutError):
        await watch.expect("member_location", timeout_s=1.0)
    members = (await server.http.get(f"/api/groups/{group}/locations",
                                     headers=auth(owner))).json()["members"]
    assert [m["user_id"] for m in members] != [] and rider_user["id"] not in {
        m["user_id"] for m in members
    }
    r = await server.http.get(f"/api/groups/{group}/members/{rider_user['id']}/history",
                              headers=auth(owner))
    assert r.status_code == 404 or r.json()["geometry"]["coordinates"] == []
    for ws in (watch, ride):
        await ws.close()
