"""REST location routes through a live server: fixes, map, history, places, events, SOS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.settings import Settings
from groups.geo import destination
from tests.server_helpers import LiveServer, auth, live_server


@pytest.fixture
async def server(settings: Settings, database_url: str) -> AsyncIterator[LiveServer]:
    async with live_server(settings.model_copy(update={"database_url": database_url})) as s:
        yield s


async def test_location_flow(server: LiveServer) -> None:
    owner, owner_user = await server.register("olga")
    member, member_user = await server.register("mika")
    stranger, _ = await server.register("sam")
    group = await server.group_with(owner, member)
    now = server.app_state.clock()

    r = await server.http.post(f"/api/groups/{group}/places", headers=auth(owner),
                               json={"name": "camp", "lat": 46.0, "lon": 7.0, "radius_m": 200})
    assert r.status_code == 201, r.text
    place = r.json()
    r = await server.http.post(f"/api/groups/{group}/places", headers=auth(member),
                               json={"name": "mine", "lat": 46.0, "lon": 7.0, "radius_m": 200})
    assert r.status_code == 403

    kinds = []
    for i, distance in enumerate([1000, 0, 1000]):
        lat, lon = destination(46.0, 7.0, 0, distance)
        r = await server.http.post("/api/locations", headers=auth(member), json={
            "lat": lat, "lon": lon, "accuracy_m": 10, "ts": now - 30 + i, "battery_pct": 80})
        assert r.status_code == 200, r.text
        kinds += [e["kind"] for e in r.json()["events"]]
    assert kinds == ["enter", "leave"]

    r = await server.http.get(f"/api/groups/{group}/locations", headers=auth(owner))
    members = {m["user_id"]: m for m in r.json()["members"]}
    assert members[member_user["id"]]["status"] == "sharing"
    assert members[owner_user["id"]]["status"] == "unknown"
    r = await server.http.get(f"/api/groups/{group}/locations", headers=auth(stranger))
    assert r.status_code == 404

    r = await server.http.get(
        f"/api/groups/{group}/members/{member_user['id']}/history",
        params={"from": now - 60, "to": now}, headers=auth(owner))
    feature = r.json()
    assert feature["geometry"]["type"] == "LineString"
    assert len(feature["geometry"]["coordinates"]) == 3

    r = await server.http.put(f"/api/groups/{group}/sharing", headers=auth(member),
                              json={"paused": True, "precision": "precise"})
    assert r.status_code == 200 and r.json()["paused"] is True
    r = await server.http.get(f"/api/groups/{group}/locations", headers=auth(owner))
    assert {m["user_id"]: m for m in r.json()["members"]}[member_user["id"]]["location"] is None

    r = await server.http.post("/api/sos", headers=auth(member))
    assert r.status_code == 200 and r.json()["alerted_groups"] == [group]
    r = await server.http.get(f"/api/groups/{group}/events", headers=auth(owner))
    assert [e["kind"] for e in r.json()["events"]] == ["sos", "leave", "enter"]

    # Moving a place (the web map drags it): admins only; the states start over.
    moved = {"name": "camp 2", "lat": 46.01, "lon": 7.0, "radius_m": 300}
    r = await server.http.put(f"/api/groups/{group}/places/{place['id']}", headers=auth(member),
                              json=moved)
    assert r.status_code == 403
    r = await server.http.put(f"/api/groups/{group}/places/{place['id']}", headers=auth(owner),
                              json={**moved, "radius_m": 5})
    assert r.status_code == 400 and "radius_m" in r.json()["message"]
    r = await server.http.put(f"/api/groups/{group}/places/999", headers=auth(owner), json=moved)
    assert r.status_code == 404
    r = await server.http.put(f"/api/groups/{group}/places/{place['id']}", headers=auth(owner),
                              json=moved)
    assert r.status_code == 200 and r.json()["name"] == "camp 2" and r.json()["radius_m"] == 300
    r = await server.http.get(f"/api/groups/{group}/places", headers=auth(owner))
    assert [(p["name"], p["lat"]) for p in r.json()["places"]] == [("camp 2", 46.01)]
    lat, lon = destination(46.01, 7.0, 0, 100)  # inside the moved place: a first fix, no event
    r = await server.http.post("/api/locations", headers=auth(member), json={
        "lat": lat, "lon": lon, "accuracy_m": 10, "ts": now - 20})
    assert r.json()["events"] == []

    r = await server.http.delete(f"/api/groups/{group}/places/{place['id']}", headers=auth(owner))
    assert r.status_code == 204
    r = await server.http.get(f"/api/groups/{group}/places", headers=auth(owner))
    assert r.json()["places"] == []


BAD_FIXES = [
    {"lat": 91, "lon": 0, "accuracy_m": 5},
    {"lat": 0, "lon": -181, "accuracy_m": 5},
    {"lat": 0, "lon": 0, "accuracy_m": 0},
    {"lat": 0, "lon": 0, "accuracy_m": 5, "ts": 4_000_000_000},
    {"lat": "north", "lon": 0, "accuracy_m": 5},
]


@pytest.mark.parametrize("body", BAD_FIXES)
async def test_bad_fixes_rejected_and_nothing_stored(server: LiveServer,
                                                     body: dict[str, object]) -> None:
    token, _user = await server.register("mika")
    group = await server.group_with(token)
    r = await server.http.post("/api/locations", headers=auth(token), json=body)
    assert r.status_code == 400, r.text
    r = await server.http.get(f"/api/groups/{group}/locations", headers=auth(token))
    assert r.json()["members"][0]["status"] == "unknown"


async def test_bad_places_and_guests(server: LiveServer) -> None:
    token, _ = await server.register("olga")
    group = await server.group_with(token)
    for radius in (0, 10, 1e9):
        r = await server.http.post(f"/api/groups/{group}/places", headers=auth(token),
                                   json={"name": "x", "lat": 1, "lon": 1, "radius_m": radius})
        assert r.status_code == 400, r.text
    r = await server.http.get(f"/api/groups/{group}/places", headers=auth(token))
    assert r.json()["places"] == []
    r = await server.http.post("/api/auth/guest", json={"display_name": "Wanderer"})
    guest = r.json()["access_token"]
    r = await server.http.post("/api/locations", headers=auth(guest),
                               json={"lat": 1, "lon": 1, "accuracy_m": 5})
    assert r.status_code == 403
    assert (await server.http.post("/api/sos", headers=auth(guest))).status_code == 403


async def test_rate_limited(server: LiveServer) -> None:
    token, _ = await server.register("mika")
    frozen = server.app_state.clock()
    server.app_state.clock = lambda: frozen  # no refill mid-test, however slow the machine
    statuses = []
    for _ in range(40):
        r = await server.http.post("/api/locations", headers=auth(token),
                                   json={"lat": 1, "lon": 1, "accuracy_m": 5})
        statuses.append(r.status_code)
    assert statuses == [200] * 30 + [429] * 10
    assert "location updates" in r.json()["message"]


async def test_sos_budget(server: LiveServer) -> None:
    """A stuck SOS button pages the group three times, then once a minute; nothing is lost."""
    owner, _ = await server.register("olga")
    member, _ = await server.register("mika")
    group = await server.group_with(owner, member)
    now = [server.app_state.clock()]
    server.app_state.clock = lambda: now[0]

    statuses = [(await server.http.post("/api/sos", headers=auth(member))).status_code
                for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    r = await server.http.post("/api/sos", headers=auth(member))
    body = r.json()
    assert body["error"] == "rate_limited" and "already have your SOS" in body["message"]
    assert 0 < body["detail"]["retry_after_s"] <= 60
    assert int(r.headers["Retry-After"]) >= 1
    events = (await server.http.get(f"/api/groups/{group}/events", headers=auth(owner))).json()
    assert [e["kind"] for e in events["events"]] == ["sos"] * 3

    now[0] += 60.0  # a minute on: one more goes out
    assert (await server.http.post("/api/sos", headers=auth(member))).status_code == 200
    assert (await server.http.post("/api/sos", headers=auth(member))).status_code == 429
    # the owner's budget is the owner's own
    assert (await server.http.post("/api/sos", headers=auth(owner))).status_code == 200
