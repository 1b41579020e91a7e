"""A MediaRoom with real aiortc peers on 127.0.0.1: who hears whom.

Each client sends its own sine tone; an FFT of what a client receives tells
exactly whose voices are in its mix.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.errors import BadRequest
from sfu.errors import BadCandidate, BadOffer, BadVolume
from sfu.room import MediaConfig, MediaRoom, StaticControls
from tests.rtc_helpers import (
    RtcClient,
    describe_tones,
    eventually,
    has_tone,
    join,
    lacks_tone,
    loopback_ice,
    record_for,
    steady_tone_level_db,
    tone_level_db,
)

TONES = {"a": 440.0, "b": 660.0, "c": 990.0, "d": 1320.0}
SETTLE_S = 0.8
"""Time for a change to reach the ears: speaking gate, jitter, one tick."""
WINDOW_S = 1.0


class Room:
    """A started MediaRoom, its events, and the clients joined to it."""

    def __init__(
        self, room: MediaRoom, events: list[dict[str, Any]], controls: StaticControls
    ) -> None:
        self.media = room
        self.events = events
        self.controls = controls
        self.clients: dict[str, RtcClient] = {}

    async def join(self, *names: str, **kwargs: Any) -> list[RtcClient]:
        new = [RtcClient(n, TONES.get(n), **kwargs) for n in names]
        self.clients.update({c.name: c for c in new})
        await asyncio.gather(*(join(self.media, c) for c in new))
        return new

    async def listen(self, seconds: float = WINDOW_S) -> dict[str, Any]:
        """Fresh audio each client received over ``seconds``."""
        names = list(self.clients)
        got = await record_for([self.clients[n].recorder for n in names], seconds)
        return dict(zip(names, got, strict=True))


@pytest.fixture
async def room(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Room]:
    loopback_ice(monkeypatch)
    events: list[dict[str, Any]] = []
    controls = StaticControls()
    media = MediaRoom("g1", MediaConfig(peer_timeout_s=2.0), events.append, controls=controls)
    await media.start()
    r = Room(media, events, controls)
    yield r
    for c in r.clients.values():
        await c.close()
    await media.close()


def assert_hears(heard: dict[str, Any], listener: str, present: set[str], absent: set[str]) -> None:
    samples = heard[listener]
    freqs = [TONES[n] for n in sorted(present | absent)]
    msg = f"{listener} heard {describe_tones(samples, freqs)}"
    for n in present:
        assert has_tone(samples, TONES[n]), f"{msg}; expected {n}"
    for n in absent:
        assert lacks_tone(samples, TONES[n]), f"{msg}; did not expect {n}"


async def test_everyone_hears_the_others_not_themselves_then_mute(room: Room) -> None:
    await room.join("a", "b", "c", "d")
    await asyncio.sleep(SETTLE_S)
    heard = await room.listen()
    everyone = set("abcd")
    for name in everyone:
        assert_hears(heard, name, present=everyone - {name}, absent={name})
    # all four talk: each hears a different mix (4 encodes); nobody else is here
    assert room.media.last_encodes == 4
    speaking = {e["participant_id"] for e in room.events if e["type"] == "speaking"}
    assert speaking == everyone

    room.controls.muted.add("d")  # the room's owner mutes d; the tick asks
    await asyncio.sleep(SETTLE_S)
    heard = await room.listen()
    for name in "abc":
        assert_hears(heard, name, present=set("abc") - {name}, absent={"d", name})
    assert_hears(heard, "d", present=set("abc"), absent={"d"})  # muted still hears
    # d is out of every mix, so d and ... share nothing new: a, b, c, d -> 4 mixes
    # (d hears a+b+c, which no one else does)
    assert room.media.last_encodes == 4
    await eventually(
        lambda: {"type": "stopped_speaking", "participant_id": "d"} in room.events,
        2.0,
        "stopped_speaking for the muted participant",
    )


async def test_per_listener_volume_changes_only_that_listener(room: Room) -> None:
    await room.join("a", "b", "c")
    await asyncio.sleep(SETTLE_S)
    before = await room.listen()
    room.media.set_volume("c", "a", 0.25)  # c turns a down by 12 dB
    await asyncio.sleep(SETTLE_S)
    after = await room.listen()
    def change(listener: str, speaker: str) -> float:
        level, hz = steady_tone_level_db, TONES[speaker]
        return level(after[listener], hz) - level(before[listener], hz)

    drop_c, drop_b, other_c = change("c", "a"), change("b", "a"), change("c", "b")
    assert drop_c == pytest.approx(-12.0, abs=2.5), describe_tones(after["c"], [440, 660])
    assert abs(drop_b) < 1.5  # b's mix is untouched
    assert abs(other_c) < 1.5  # and so is b's voice in c's mix

    room.media.set_volume("c", "a", 0.0)
    await asyncio.sleep(SETTLE_S)
    heard = await room.listen()
    assert_hears(heard, "c", present={"b"}, absent={"a", "c"})
    assert_hears(heard, "b", present={"a", "c"}, absent={"b"})


async def test_audibility_changes_who_hears_whom_without_renegotiation(room: Room) -> None:
    clients = await room.join("a", "b", "c")
    pcs = {c.name: c.pc for c in clients}
    # proximity: a and b are close, c is far from both
    room.media.set_audibility({"a": {"b": 1.0}, "b": {"a": 1.0}, "c": {}})
    await asyncio.sleep(SETTLE_S)
    heard = await room.listen()
    assert_hears(heard, "a", present={"b"}, absent={"a", "c"})
    assert_hears(heard, "b", present={"a"}, absent={"b", "c"})
    assert lacks_tone(heard["c"], TONES["a"]) and lacks_tone(heard["c"], TONES["b"])

    room.media.set_audibility({"a": {"c": 1.0}, "c": {"a": 0.5, "b": 1.0}})
    await asyncio.sleep(SETTLE_S)
    heard = await room.listen()
    assert_hears(heard, "a", present={"c"}, absent={"a", "b"})
    assert_hears(heard, "c", present={"a", "b"}, absent={"c"})
    assert tone_level_db(heard["c"], TONES["a"]) < tone_level_db(heard["c"], TONES["b"]) - 3

    room.media.set_audibility(None)  # back to a group room
    await asyncio.sleep(SETTLE_S)
    heard = await room.listen()
    assert_hears(heard, "b", present={"a", "c"}, absent={"b"})
    assert {c.name: c.pc for c in room.clients.values()} == pcs
    assert all(pc.connectionState == "connected" for pc in pcs.values())


async def test_vanished_client_leaves_the_mix_and_the_room_goes_on(room: Room) -> None:
    await room.join("a", "b", "c")
    await asyncio.sleep(SETTLE_S)
    room.clients["c"].vanish()  # no goodbye: sockets closed, nothing more sent
    await eventually(
        lambda: {"type": "peer_state", "participant_id": "c", "state": "failed"} in room.events,
        5.0,
        "the vanished peer reported failed",
    )
    await eventually(lambda: "c" not in room.media.participant_ids(), 2.0, "c removed")
    vanished = room.clients.pop("c")
    heard = await room.listen()
    assert_hears(heard, "a", present={"b"}, absent={"a", "c"})
    assert_hears(heard, "b", present={"a"}, absent={"b", "c"})
    await vanished.close()


async def test_rejoin_replaces_the_peer_connection(room: Room) -> None:
    await room.join("a", "b")
    old = room.clients.pop("b")
    # the app reconnects (new network) while the old connection still looks alive:
    # a new peer connection for the same participant (aiortc has no ICE restart)
    new = RtcClient("b", TONES["b"])
    room.clients["b"] = new
    await join(room.media, new)
    await old.close()
    assert room.media.participant_ids() == ["a", "b"]
    await asyncio.sleep(SETTLE_S)
    heard = await room.listen()
    assert_hears(heard, "b", present={"a"}, absent={"b"})
    assert_hears(heard, "a", present={"b"}, absent={"a"})
    # the replaced connection's end is not reported as the participant leaving
    assert not any(
        e["type"] == "peer_state" and e["state"] in ("failed", "closed") for e in room.events
    )


async def test_listen_only_client_hears_the_room(room: Room) -> None:
    await room.join("a")
    listener = RtcClient("l", None, send=False)
    room.clients["l"] = listener
    await join(room.media, listener)
    await asyncio.sleep(SETTLE_S)
    heard = await room.listen()
    assert has_tone(heard["l"], TONES["a"])


@pytest.mark.parametrize(
    "sdp",
    [
        "not sdp at all",
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",  # audio but no ICE/DTLS at all
    ],
    ids=["garbage", "video-only", "truncated"],
)
async def test_bad_offers(room: Room, sdp: str) -> None:
    with pytest.raises(BadOffer) as info:
        await room.media.connect("x", sdp)
    assert isinstance(info.value, BadRequest)
    assert room.media.participant_ids() == []


async def test_offer_with_only_music_audio_is_refused(room: Room) -> None:
    client = RtcClient("m", 440.0)
    offer = await client.offer()
    mids = [t.mid for t in client.pc.getTransceivers() if t.mid]
    with pytest.raises(BadOffer, match="voice"):
        await room.media.connect("m", offer, music_mids=mids)
    await client.close()


async def test_candidates(room: Room) -> None:
    candidate = {
        "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    with pytest.raises(BadCandidate, match="before offer"):
        await room.media.add_candidate("a", candidate)
    (a,) = await room.join("a")
    await room.media.add_candidate("a", candidate)  # harmless extra candidate
    await room.media.add_candidate("a", None)  # end of candidates
    with pytest.raises(BadCandidate):
        await room.media.add_candidate("a", {"candidate": "candidate:garbage", "sdpMid": "0"})
    with pytest.raises(BadCandidate):
        await room.media.add_candidate("a", {"candidate": candidate["candidate"]})  # no mid
    assert a.pc.connectionState == "connected"


@pytest.mark.parametrize("gain", [-1, 2.5, float("nan"), "loud", True])
async def test_volume_out_of_range(room: Room, gain: Any) -> None:
    with pytest.raises(BadVolume):
        room.media.set_volume("a", "b", gain)


async def test_disconnect_is_idempotent(room: Room) -> None:
    await room.join("a")
    await room.media.disconnect("a")
    await room.media.disconnect("a")
    await room.media.disconnect("never-here")
    assert room.media.participant_ids() == []
