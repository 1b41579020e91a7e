"""Voice end to end through the server: WebSocket signaling + real aiortc peers.

Three members of a group join its room over /ws, negotiate WebRTC with
offer/answer messages and send different tones; an FFT of what each hears
shows the other two tones and never its own. Mute and per-listener volume go
over the WebSocket too, and a dropped socket takes its voice out of the mix.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.settings import Settings
from tests.rtc_helpers import (
    RtcClient,
    assert_mix_minus,
    describe_tones,
    eventually,
    has_tone,
    lacks_tone,
    loopback_ice,
    steady_tone_level_db,
)
from tests.server_helpers import LiveServer, WsClient, auth, live_server

TONES_HZ = {"alice": 440.0, "bob": 660.0, "carol": 990.0}
LISTEN_S = 1.0
LEVEL_S = 1.6
"""Gains are compared over 8 blocks of 0.2 s, by their median."""


@pytest.fixture
async def server(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    loopback_ice(monkeypatch)
    async with live_server(settings.model_copy(update={"rtc_host_addresses": ["127.0.0.1"]})) as s:
        yield s


async def talk(server: LiveServer, ws: WsClient, room: str, name: str) -> tuple[RtcClient, str]:
    """Join ``room`` and connect a tone-sending peer through the server's signaling."""
    joined = await ws.request({"type": "join", "room": room}, "joined")
    client = RtcClient(name, TONES_HZ[name])
    answer = await ws.request({"type": "offer", "room": room, "sdp": await client.offer()},
                              "answer")
    await client.accept(answer["sdp"])
    await client.wait_connected()
    return client, joined["participant_id"]


async def scrape(server: LiveServer) -> dict[str, float]:
    """GET /metrics, parsed by prometheus-client's own parser: sample name -> value."""
    text = (await server.http.get("/metrics")).text
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples}


async def heard(client: RtcClient) -> object:
    await asyncio.sleep(LISTEN_S)
    return client.recorder.last(LISTEN_S)


async def test_group_room_mix_minus_mute_volume_and_drop(server: LiveServer) -> None:
    tokens = {name: (await server.register(name))[0] for name in TONES_HZ}
    group = await server.group_with(tokens["alice"], tokens["bob"], tokens["carol"])
    room = f"group:{group}"
    sockets = {name: await server.connect(token) for name, token in tokens.items()}
    peers: dict[str, RtcClient] = {}
    pids: dict[str, str] = {}
    try:
        for name in TONES_HZ:
            peers[name], pids[name] = await talk(server, sockets[name], room, name)
        for client in peers.values():
            await client.recorder.wait_frames(50)
        await asyncio.sleep(0.5)

        # Mix-minus: everyone else's tone, never your own.
        assert_mix_minus(peers, TONES_HZ, LISTEN_S)

        # Prometheus sees the room working.
        metrics = await scrape(server)
        assert metrics["disco_sfu_participants"] >= 3
        assert metrics["disco_participants"] >= 3
        assert metrics["disco_sfu_encodes_total"] > 0
        assert metrics["disco_sfu_packets_in_total"] > 0
        assert metrics["disco_sfu_packets_out_total"] > 0
        assert metrics["disco_sfu_tick_seconds_count"] > 50
        # the server's own latency parts are timed (a sample of frames and packets)
        assert metrics["disco_sfu_jitter_wait_seconds_count"] > 10
        assert metrics["disco_sfu_send_wait_seconds_count"] > 10

        # The server saw speech and said so over the WebSocket.
        speaking = await sockets["alice"].expect("speaking", participant_id=pids["bob"])
        assert speaking["room"] == room
        # A late joiner learns who is already talking from `joined`.
        dave_token, _ = await server.register("dave")
        code = (await server.http.post(f"/api/groups/{group}/invites",
                                       headers=auth(tokens["alice"]))).json()["code"]
        await server.http.post(f"/api/invites/{code}/accept", headers=auth(dave_token))
        dave = await server.connect(dave_token)
        late = await dave.request({"type": "join", "room": room}, "joined")
        assert {p["participant_id"]: p["speaking"] for p in late["participants"]} == {
            pids[name]: True for name in TONES_HZ
        }
        await dave.close()

        # Alice turns Bob down to a quarter in her mix only (-12 dB).
        bob_hz = TONES_HZ["bob"]
        before_alice = steady_tone_level_db(peers["alice"].recorder.last(LEVEL_S), bob_hz)
        before_carol = steady_tone_level_db(peers["carol"].recorder.last(LEVEL_S), bob_hz)
        await sockets["alice"].request(
            {"type": "volume", "participant_id": pids["bob"], "gain": 0.25}, "volume"
        )
        await asyncio.sleep(0.3 + LEVEL_S)
        after_alice = steady_tone_level_db(peers["alice"].recorder.last(LEVEL_S), bob_hz)
        after_carol = steady_tone_level_db(peers["carol"].recorder.last(LEVEL_S), bob_hz)
        assert -15.0 < after_alice - before_alice < -9.0, (before_alice, after_alice)
        assert abs(after_carol - before_carol) < 2.0, (before_carol, after_carol)

        # Carol mutes: her tone leaves both other mixes; the others are told.
        await sockets["carol"].request({"type": "mute", "muted": True}, "muted")
        muted = await sockets["bob"].expect("participant_muted")
        assert muted["participant_id"] == pids["carol"] and muted["muted"] is True
        await asyncio.sleep(0.3)
        for name in ("alice", "bob"):
            samples = await heard(peers[name])
            assert lacks_tone(samples, TONES_HZ["carol"]), describe_tones(samples, [990.0])  # type: ignore[arg-type]

        # Bob's WebSocket drops: his voice leaves the mix, the room keeps going.
        await sockets["bob"].close()
        await sockets["alice"].expect("participant_left", participant_id=pids["bob"])
        await asyncio.sleep(0.3)
        samples = await heard(peers["alice"])
        assert lacks_tone(samples, TONES_HZ["bob"])  # type: ignore[arg-type]
        await sockets["carol"].request({"type": "mute", "muted": False}, "muted")
        await eventually(
            lambda: has_tone(peers["alice"].recorder.last(0.5), TONES_HZ["carol"]), 5.0,
            "carol back in alice's mix after unmuting",
        )
    finally:
        for client in peers.values():
            await client.close()
        for ws in sockets.values():
            await ws.close()


async def test_voice_bad_input_leaves_the_room_working(server: LiveServer) -> None:
    token, _ = await server.register("alice")
    group = await server.group_with(token)
    ws = await server.connect(token)
    room = f"group:{group}"
    await ws.send({"type": "offer", "room": room, "sdp": "v=0"})
    assert (await ws.expect("error"))["code"] == "not_found"  # not in the room yet
    await ws.request({"type": "join", "room": room}, "joined")
    await ws.send({"type": "candidate", "room": room,
                   "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                 "sdpMid": "0", "sdpMLineIndex": 0}})
    assert (await ws.expect("error"))["code"] == "bad_request"  # candidate before offer
    await ws.send({"type": "offer", "room": room, "sdp": "this is not SDP"})
    assert (await ws.expect("error"))["code"] == "bad_request"
    video_only = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
                  "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n")
    await ws.send({"type": "offer", "room": room, "sdp": video_only})
    assert (await ws.expect("error"))["code"] == "bad_request"
    # The room still works: a real offer is answered.
    client = RtcClient("alice", 440.0)
    try:
        answer = await ws.request({"type": "offer", "room": room, "sdp": await client.offer()},
                                  "answer")
        await client.accept(answer["sdp"])
        await client.wait_connected()
    finally:
        await client.close()
        await ws.close()
