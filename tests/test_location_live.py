"""Group location live over the WebSocket: who receives what, once, and when it stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.settings import Settings
from tests.server_helpers import LiveServer, WsClient, auth, live_server

LAT, LON = 60.1699, 24.9384  # Helsinki
M_PER_DEG_LAT = 111_195.0


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    async with live_server(settings) as s:
        yield s


async def _group_with_a_base(server: LiveServer) -> tuple[str, str, dict[str, Any], int]:
    """An owner and a rider in one group with a 150 m place "Base" at (LAT, LON)."""
    owner, _ = await server.register("owner")
    rider, rider_user = await server.register("rider")
    group = await server.group_with(owner, rider)
    r = await server.http.post(f"/api/groups/{group}/places", headers=auth(owner),
                               json={"name": "Base", "lat": LAT, "lon": LON, "radius_m": 150})
    assert r.status_code == 201, r.text
    return owner, rider, rider_user, group


async def test_positions_places_and_leaving(server: LiveServer) -> None:
    owner, rider, rider_user, group = await _group_with_a_base(server)
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


async def test_place_edits_reach_every_member_at_once(server: LiveServer) -> None:
    """An admin adds, moves and deletes a place: each live member's map is told, a stranger
    (in no group with them) hears nothing, and what is told matches what GET lists."""
    owner, rider, _, group = await _group_with_a_base(server)
    stranger, _ = await server.register("stranger")
    sockets = [await server.connect(t) for t in (owner, rider, stranger)]
    new = {"name": "Hut", "lat": LAT + 0.01, "lon": LON, "radius_m": 80}
    r = await server.http.post(f"/api/groups/{group}/places", headers=auth(owner), json=new)
    hut = r.json()
    moved = {**new, "lat": LAT + 0.02, "radius_m": 120}
    r = await server.http.put(f"/api/groups/{group}/places/{hut['id']}", headers=auth(owner),
                              json=moved)
    assert r.status_code == 200, r.text
    r = await server.http.delete(f"/api/groups/{group}/places/{hut['id']}", headers=auth(owner))
    assert r.status_code == 204
    for ws in sockets[:2]:
        told = [await ws.expect("place_changed") for _ in range(3)]
        assert [m["change"] for m in told] == ["added", "changed", "deleted"]
        assert {m["group_id"] for m in told} == {group}
        assert told[0]["place"] == hut
        assert (told[1]["place"]["lat"], told[1]["place"]["radius_m"]) == (moved["lat"], 120)
        assert told[2]["place"] == {"id": hut["id"]}
    with pytest.raises(TimeoutError):
        await sockets[2].expect("place_changed", timeout_s=0.5)
    assert not [f for f in sockets[2].raw if "Hut" in f]
    r = await server.http.put(f"/api/groups/{group}/places/{hut['id']}", headers=auth(rider),
                              json=moved)
    assert r.status_code in (403, 404)  # a member may not edit; nothing is announced
    with pytest.raises(TimeoutError):
        await sockets[0].expect("place_changed", timeout_s=0.3)
    for ws in sockets:
        await ws.close()


BROADCASTS = {"member_location", "place_event", "place_changed", "sos", "chat", "member_sharing",
              "membership",
              "participant_joined", "participant_left", "participant_muted",
              "participant_renamed", "nearby", "speaking", "stopped_speaking", "music_state"}


async def test_broadcast_events_never_carry_a_request_id(server: LiveServer) -> None:
    """A top-level ``id`` is only ever the receiver's own request id, on the reply to it:
    another member's SOS, place event or chat must not look like the answer to a request
    (the ids the events used to carry were small integers, like clients' request ids)."""
    owner, rider, _, group = await _group_with_a_base(server)
    watch, ride = await server.connect(owner), await server.connect(rider)
    room = f"group:{group}"
    sent: dict[int, set[object]] = {id(watch): set(), id(ride): set()}

    async def ask(ws: WsClient, n: int, message: dict[str, object], reply: str) -> None:
        sent[id(ws)].add(n)
        await ws.request({**message, "id": n}, reply)

    await ask(watch, 1, {"type": "join", "room": room}, "joined")
    await ask(ride, 1, {"type": "join", "room": room}, "joined")
    far = LAT + 1000 / M_PER_DEG_LAT
    for n, lat in enumerate((far, LAT, far, LAT), start=2):  # enter, leave, enter
        await ask(ride, n, {"type": "location", "lat": lat, "lon": LON, "accuracy_m": 10},
                  "location_ok")
    await ask(ride, 6, {"type": "sos", "message": "help"}, "sos_sent")
    await ask(ride, 7, {"type": "chat", "room": room, "text": "at the base"}, "chat_sent")
    await ask(watch, 2, {"type": "chat", "room": room, "text": "coming"}, "chat_sent")
    await ask(ride, 8, {"type": "mute", "muted": True}, "muted")
    r = await server.http.put(f"/api/groups/{group}/sharing", headers=auth(rider),
                              json={"paused": True, "precision": "precise"})
    assert r.status_code == 200, r.text
    for ws in (watch, ride):
        for kind in ("place_event", "sos", "member_sharing"):
            await ws.expect(kind)
    await watch.expect("chat")
    await ride.expect("chat")
    for ws in (watch, ride):
        with pytest.raises(TimeoutError):
            await ws.expect("never", timeout_s=0.3)  # take in whatever is still coming
        frames = [json.loads(f) for f in ws.raw]
        kinds = {f["type"] for f in frames}
        assert {"place_event", "sos", "chat", "member_sharing"} <= kinds
        for frame in frames:
            if frame["type"] in BROADCASTS:
                assert "id" not in frame, frame
            elif "id" in frame:
                assert frame["id"] in sent[id(ws)], frame
        events = [f for f in frames if f["type"] in ("place_event", "sos")]
        assert all(isinstance(f["event_id"], int) for f in events)
        assert all(isinstance(f["message_id"], int) for f in frames if f["type"] == "chat")
    listed = (await server.http.get(f"/api/groups/{group}/events", headers=auth(owner))).json()
    assert listed["events"] and all("id" not in e and e["event_id"] for e in listed["events"])
    for ws in (watch, ride):
        await ws.close()
