"""Proximity voice through the server: guests at chosen coordinates, real aiortc peers.

A and B stand 100 m apart and hear each other; C, 5 km away, hears neither
and is heard by neither. C walks to 400 m from A (300 m from B): both tones
appear on the SAME peer connections, at the gains the curve gives for those
distances. Everything strangers receive is checked for coordinates.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.settings import Settings
from groups.nearby.proximity import GainCurve
from tests.rtc_helpers import (
    RtcClient,
    eventually,
    has_tone,
    lacks_tone,
    loopback_ice,
    steady_tone_level_db,
)
from tests.server_helpers import LiveServer, WsClient, live_server

BASE_LAT, BASE_LON = 45.8326, 6.8652  # Chamonix
M_PER_DEG_LAT = 111_195.0
RADIUS_M = 500.0
TONES = {"a": 440.0, "b": 660.0, "c": 990.0}
COORD_KEYS = {"lat", "lon", "latitude", "longitude", "coordinates", "position"}


def north(metres: float) -> float:
    return BASE_LAT + metres / M_PER_DEG_LAT


@pytest.fixture
async def server(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    loopback_ice(monkeypatch)
    async with live_server(settings.model_copy(update={"rtc_host_addresses": ["127.0.0.1"]})) as s:
        yield s


async def guest(server: LiveServer, name: str) -> WsClient:
    r = await server.http.post("/api/auth/guest", json={"display_name": name})
    assert r.status_code == 201, r.text
    return await server.connect(r.json()["access_token"])


async def place(ws: WsClient, metres_north: float) -> None:
    await ws.request({"type": "location", "id": "fix", "lat": north(metres_north),
                      "lon": BASE_LON, "accuracy_m": 5.0}, "location_ok")


async def voice(ws: WsClient, name: str) -> RtcClient:
    client = RtcClient(name, TONES[name])
    answer = await ws.request({"type": "offer", "room": "nearby", "sdp": await client.offer()},
                              "answer")
    await client.accept(answer["sdp"])
    await client.wait_connected()
    return client


def assert_no_coordinates(ws: WsClient, sent: list[float]) -> None:
    """No frame a guest received holds a coordinate key or any coordinate we sent."""
    def walk(value: Any) -> None:
        if isinstance(value, dict):
            assert not COORD_KEYS & set(value), f"coordinates on the wire: {value}"
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, float):
            assert all(abs(value - c) > 1e-3 for c in sent), f"a coordinate leaked: {value}"

    assert ws.raw, "nothing received"
    for frame in ws.raw:
        walk(json.loads(frame))


async def test_who_hears_whom_follows_distance(server: LiveServer) -> None:
    sockets = {name: await guest(server, name.upper()) for name in TONES}
    peers: dict[str, RtcClient] = {}
    try:
        for ws in sockets.values():
            await ws.request({"type": "join", "room": "nearby", "radius_m": RADIUS_M}, "joined")
        await place(sockets["a"], 0.0)
        await place(sockets["b"], 100.0)
        await place(sockets["c"], 5_000.0)
        for name, ws in sockets.items():
            peers[name] = await voice(ws, name)
        for client in peers.values():
            await client.recorder.wait_frames(50)
        await asyncio.sleep(1.0)

        a, b, c = (peers[n].recorder.last(1.0) for n in "abc")
        assert has_tone(a, TONES["b"]) and has_tone(b, TONES["a"])
        assert lacks_tone(a, TONES["c"]) and lacks_tone(b, TONES["c"])
        assert lacks_tone(c, TONES["a"]) and lacks_tone(c, TONES["b"])
        room = server.app_state.rooms.get("nearby")
        assert room is not None and room.media is not None
        assert room.media.config.room_wide_top_n is False  # strangers: top-N per listener

        # A sees B by name and rounded distance only.
        seen = await sockets["a"].expect("nearby")
        while not seen["people"]:
            seen = await sockets["a"].expect("nearby")
        assert [(p["display_name"], p["distance"]) for p in seen["people"]] == [("B", "~100 m")]

        # C walks closer: same peer connections, new mix plan.
        pcs = {name: id(client.pc) for name, client in peers.items()}
        await place(sockets["c"], 400.0)
        await eventually(lambda: has_tone(peers["a"].recorder.last(0.5), TONES["c"]), 5.0,
                         "A hears C once C is in range")
        await asyncio.sleep(1.2)
        a, b, c = (peers[n].recorder.last(1.0) for n in "abc")
        assert has_tone(c, TONES["a"]) and has_tone(c, TONES["b"])
        assert {name: id(client.pc) for name, client in peers.items()} == pcs
        assert all(client.pc.connectionState == "connected" for client in peers.values())

        # Gain falls with distance as the curve says: relative to B (100 m, full gain),
        # A hears C (400 m) at gain(400)/gain(100).
        curve = GainCurve()
        expected_db = 20 * math.log10(curve.gain(400.0, RADIUS_M) / curve.gain(100.0, RADIUS_M))
        level = steady_tone_level_db
        measured_db = level(a, TONES["c"]) - level(a, TONES["b"])
        assert abs(measured_db - expected_db) < 2.5, (measured_db, expected_db)
        closer_db = 20 * math.log10(curve.gain(300.0, RADIUS_M) / curve.gain(400.0, RADIUS_M))
        measured_closer = level(b, TONES["c"]) - level(a, TONES["c"])
        assert abs(measured_closer - closer_db) < 2.5, (measured_closer, closer_db)

        # Shrinking C's radius to 100 m takes A and B out of range again.
        await sockets["c"].request({"type": "radius", "radius_m": 100}, "radius")
        await eventually(lambda: lacks_tone(peers["a"].recorder.last(0.5), TONES["c"]), 5.0,
                         "C out of A's mix after C's radius shrinks")
        sent = [north(0.0), north(100.0), north(400.0), north(5000.0), BASE_LON]
        for ws in sockets.values():
            assert_no_coordinates(ws, sent)
    finally:
        for client in peers.values():
            await client.close()
        for ws in sockets.values():
            await ws.close()


async def test_nearby_chat_reaches_exactly_those_in_range(server: LiveServer) -> None:
    a, b, c = [await guest(server, n) for n in ("Ann", "Ben", "Cid")]
    for ws in (a, b, c):
        await ws.request({"type": "join", "room": "nearby", "radius_m": 300}, "joined")
    await place(a, 0.0)
    await place(b, 150.0)
    await place(c, 2_000.0)
    sent = await a.request({"type": "chat", "room": "nearby", "text": "anyone near the lift?"},
                           "chat_sent")
    assert sent["recipients"] == 1
    got = await b.expect("chat")
    assert got["text"] == "anyone near the lift?" and got["display_name"] == "Ann"
    await asyncio.sleep(0.3)
    assert not [m for m in c.backlog if m["type"] == "chat"]
    with pytest.raises(TimeoutError):
        await c.expect("chat", timeout_s=0.5)
    # Too long, then too fast: clear errors, nothing delivered.
    await a.send({"type": "chat", "room": "nearby", "text": "x" * 501})
    assert (await a.expect("error"))["code"] == "bad_request"
    codes = []
    for n in range(8):
        await a.send({"type": "chat", "room": "nearby", "text": f"spam {n}", "id": n})
        reply = await a.expect_any({"chat_sent", "error"})
        codes.append(reply.get("code", "ok"))
    assert "rate_limited" in codes
    for ws in (a, b, c):
        await ws.close()


async def test_guest_display_name_changes_at_most_three_times(server: LiveServer) -> None:
    ws = await guest(server, "Nomad")
    for n in range(3):
        reply = await ws.request({"type": "display_name", "display_name": f"Nomad {n}"},
                                 "display_name")
        assert reply["changes_left"] == 2 - n
    await ws.send({"type": "display_name", "display_name": "Nomad 4"})
    error = await ws.expect("error")
    assert error["code"] == "rate_limited" and "3 times" in error["message"]
    await ws.close()


@pytest.mark.parametrize(
    "fix",
    [
        {"lat": 91.0, "lon": 0.0, "accuracy_m": 5},
        {"lat": 0.0, "lon": -180.5, "accuracy_m": 5},
        {"lat": 0.0, "lon": 0.0, "accuracy_m": 0},
        {"lat": 0.0, "lon": 0.0, "accuracy_m": 5, "ts": 4_000_000_000},
        {"lat": "north", "lon": 0.0, "accuracy_m": 5},
    ],
)
async def test_bad_fixes_are_refused_and_change_nothing(server: LiveServer,
                                                        fix: dict[str, object]) -> None:
    a, b = await guest(server, "A"), await guest(server, "B")
    for ws in (a, b):
        await ws.request({"type": "join", "room": "nearby", "radius_m": 500}, "joined")
    await place(a, 0.0)
    await place(b, 50.0)
    await a.send({"type": "location", **fix})
    assert (await a.expect("error"))["code"] == "bad_request"
    nearby = server.app_state.nearby
    assert nearby is not None
    participant = server.app_state.rooms.get("nearby").participants  # type: ignore[union-attr]
    pid_a = next(p for p in participant.values() if p.peer.display_name == "A").participant_id
    assert nearby.index.latlon[pid_a] == (north(0.0), BASE_LON)  # still where it was
    for ws in (a, b):
        await ws.close()


async def test_guests_cannot_use_group_rooms_or_set_radius_outside_nearby(
    server: LiveServer,
) -> None:
    ws = await guest(server, "G")
    await ws.send({"type": "radius", "radius_m": 300})
    assert (await ws.expect("error"))["code"] == "bad_request"
    await ws.send({"type": "join", "room": "group:1"})
    assert (await ws.expect("error"))["code"] == "forbidden"
    await ws.close()


async def test_a_fix_sent_before_joining_counts(server: LiveServer) -> None:
    a, b = await guest(server, "Early"), await guest(server, "Bird")
    await place(a, 0.0)  # before joining
    await place(b, 120.0)
    await a.request({"type": "join", "room": "nearby", "radius_m": 500}, "joined")
    await b.request({"type": "join", "room": "nearby", "radius_m": 500}, "joined")
    seen = await a.expect("nearby")
    while not seen["people"]:
        seen = await a.expect("nearby")
    assert [(p["display_name"], p["distance"]) for p in seen["people"]] == [("Bird", "~100 m")]
    for ws in (a, b):
        await ws.close()
