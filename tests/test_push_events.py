"""Who gets pushed, for what: through a live server to a local FCM v1 stand-in.

Invites accepted, place arrivals, SOS and calls each push the group's other
members (never the actor), and a muted category sends nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings
from groups.push.fcm import FcmSender
from groups.push.messages import Platform
from tests.push_support import FakeFcm, android_token, fake_fcm
from tests.server_helpers import LiveServer, auth, live_server

LAT, LON = 46.0207, 7.7491  # Zermatt


@pytest.fixture
async def pushing(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[LiveServer, FakeFcm]]:
    with fake_fcm(tmp_path) as (fake, account):
        async with live_server(settings) as server:
            server.app_state.push.senders[Platform.android] = FcmSender(
                service_account_file=str(account), endpoint_base=fake.url
            )
            yield server, fake


async def device(server: LiveServer, token: str, n: int) -> str:
    push_token = android_token(n)
    r = await server.http.post("/api/devices", json={"platform": "android", "token": push_token},
                               headers=auth(token))
    assert r.status_code == 201, r.text
    return push_token


async def drained(server: LiveServer) -> None:
    """Wait for the server's background work (push look-ups), then for the sends."""
    await asyncio.gather(*server.app_state.background)
    await server.app_state.push.drain()


def bodies(fake: FakeFcm, token: str) -> list[str]:
    sent: list[dict[str, Any]] = fake.sent_to(token)
    return [m["notification"]["body"] for m in sent]


async def test_pushes_follow_group_events(pushing: tuple[LiveServer, FakeFcm]) -> None:
    server, fake = pushing
    owner, _ = await server.register("owner")
    walker, _ = await server.register("walker")
    owner_device = await device(server, owner, 1)
    walker_device = await device(server, walker, 2)

    # Invite accepted: the owner hears of it, the joiner does not.
    group = await server.group_with(owner, walker, name="Rope team")
    await drained(server)
    assert bodies(fake, owner_device) == ["walker joined the group"]
    assert bodies(fake, walker_device) == []

    # The walker starts a call: the owner, not in the room, is told.
    ws = await server.connect(walker)
    await ws.request({"type": "join", "room": f"group:{group}"}, "joined")
    await drained(server)
    assert bodies(fake, owner_device)[-1] == "A call started in Rope team (walker)"

    # Arriving at a place.
    r = await server.http.post(f"/api/groups/{group}/places", headers=auth(owner),
                               json={"name": "Hut", "lat": LAT, "lon": LON, "radius_m": 200})
    assert r.status_code == 201, r.text
    await ws.request({"type": "location", "lat": LAT + 0.02, "lon": LON, "accuracy_m": 10},
                     "location_ok")
    await ws.request({"type": "location", "lat": LAT, "lon": LON, "accuracy_m": 10},
                     "location_ok")
    await drained(server)
    assert bodies(fake, owner_device)[-1] == "walker arrived at Hut"

    # SOS, then again with the category muted: nothing more arrives.
    sent = await ws.request({"type": "sos"}, "sos_sent")
    assert sent["groups"] == [group]
    await drained(server)
    assert bodies(fake, owner_device)[-1] == "walker needs help (Rope team)"
    count = len(bodies(fake, owner_device))
    r = await server.http.put("/api/push/settings", json={"muted": ["sos"]}, headers=auth(owner))
    assert r.status_code == 200, r.text
    await ws.request({"type": "sos"}, "sos_sent")
    await drained(server)
    assert len(bodies(fake, owner_device)) == count
    assert bodies(fake, walker_device) == []  # the actor is never pushed about itself
    await ws.close()


async def test_guests_cannot_raise_sos(pushing: tuple[LiveServer, FakeFcm]) -> None:
    server, _ = pushing
    r = await server.http.post("/api/auth/guest", json={"display_name": "G"})
    ws = await server.connect(r.json()["access_token"])
    await ws.send({"type": "sos"})
    assert (await ws.expect("error"))["code"] == "forbidden"
    await ws.close()
