"""A downgrade stops music in a live room: real server, real aiortc peer, signed webhooks.

The owner pays (webhook), joins the group room over /ws with an aiortc peer,
plays a 330 Hz tone file and hears it; Stripe then says the subscription is
deleted, and within seconds the tone is gone from what the peer hears and
playing again is refused with the limit named. An upgrade lets music back in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.settings import Settings
from tests.billing_support import FakeStripe, body, sign, subscription_event
from tests.rtc_helpers import (
    RtcClient,
    describe_tones,
    has_tone,
    lacks_tone,
    loopback_ice,
    write_tone_file,
)
from tests.server_helpers import LiveServer, auth, live_server
from tests.test_billing_api import billing_settings

MUSIC_HZ = 330.0
LISTEN_S = 1.0
STOP_WITHIN_S = 5.0


@pytest.fixture
async def server(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 stripe_api: FakeStripe) -> AsyncIterator[LiveServer]:
    loopback_ice(monkeypatch)
    music = tmp_path / "music"
    music.mkdir()
    write_tone_file(music / "tone.wav", freq_hz=MUSIC_HZ, seconds=30.0, rate_hz=24_000)
    configured = billing_settings(settings, tmp_path, settings.database_url, stripe_api.url)
    configured = configured.model_copy(update={"rtc_host_addresses": ["127.0.0.1"],
                                               "music_dir": music})
    async with live_server(configured) as s:
        yield s


async def webhook(server: LiveServer, event: dict[str, object]) -> str:
    payload = body(event)
    r = await server.http.post("/api/billing/webhook", content=payload,
                               headers={"Stripe-Signature": sign(payload)})
    assert r.status_code == 200, r.text
    return str(r.json()["outcome"])


async def test_downgrade_stops_music_in_a_live_room(server: LiveServer) -> None:
    owner, _ = await server.register("owner")
    r = await server.http.post("/api/billing/checkout", json={"plan": "plus"},
                               headers=auth(owner))
    assert r.status_code == 200, r.text
    now = int(time.time())
    assert await webhook(server, subscription_event(
        "evt_up", now - 10, kind="created", customer="cus_test1")) == "applied"
    group = await server.group_with(owner)
    room = f"group:{group}"
    ws = await server.connect(owner)
    client = RtcClient("owner", tone_hz=None)
    try:
        joined = await ws.request({"type": "join", "room": room}, "joined")
        assert joined["music_allowed"] is True
        answer = await ws.request({"type": "offer", "room": room, "sdp": await client.offer()},
                                  "answer")
        await client.accept(answer["sdp"])
        await client.wait_connected()
        await ws.request({"type": "music", "action": "play", "source": "tone.wav",
                          "room": room}, "music_state")
        await client.recorder.wait_frames(50)
        await asyncio.sleep(LISTEN_S)
        playing = client.recorder.last(LISTEN_S)
        assert has_tone(playing, MUSIC_HZ), describe_tones(playing, [MUSIC_HZ])

        assert await webhook(server, subscription_event(
            "evt_down", now, kind="deleted", customer="cus_test1", status="canceled")) \
            == "applied"
        deadline = time.monotonic() + STOP_WITHIN_S
        while True:
            await asyncio.sleep(0.25)
            heard = client.recorder.last(0.5)
            if lacks_tone(heard, MUSIC_HZ):
                break
            assert time.monotonic() < deadline, (
                f"music still playing {STOP_WITHIN_S}s after the downgrade: "
                f"{describe_tones(heard, [MUSIC_HZ])}")
        await ws.send({"type": "music", "action": "play", "source": "tone.wav", "room": room})
        error = await ws.expect("error")
        assert error["code"] == "limit_exceeded" and "music" in error["message"]

        # paying again lets music back in without rejoining
        assert await webhook(server, subscription_event(
            "evt_again", now + 1, kind="created", sub_id="sub_2", customer="cus_test1")) \
            == "applied"
        await asyncio.sleep(0.2)
        await ws.request({"type": "music", "action": "play", "source": "tone.wav",
                          "room": room}, "music_state")
    finally:
        await client.close()
        await ws.close()
