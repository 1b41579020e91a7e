"""Top-N speakers through a real room: real aiortc peers send tones (aiortc puts the
RFC 6464 level in each packet), and an FFT of what each listener hears tells whose
voices are in its mix. With 6 talkers and N = 3 everyone hears the 3 loudest of the
others, nobody hears themselves, and a quiet talker who gets louder takes a place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sfu.room import MediaConfig, MediaRoom
from tests.rtc_helpers import (
    RtcClient,
    describe_tones,
    eventually,
    has_tone,
    join,
    lacks_tone,
    loopback_ice,
    record_for,
)

TOP_N = 3
TONES_HZ = {"a": 440.0, "b": 660.0, "c": 990.0, "d": 1320.0, "e": 1760.0, "f": 2200.0}
AMPLITUDES = {"a": 0.3, "b": 0.19, "c": 0.12, "d": 0.075, "e": 0.047, "f": 0.03}
"""4 dB apart, loudest first: more than the selector's 3 dB hysteresis."""
LEVEL_DB = {"a": -10.5, "b": -14.5, "c": -18.5, "d": -22.5, "e": -26.5, "f": -30.5}
"""Each tone's level in dBFS (20 log10 of its amplitude)."""
PRESENT_MARGIN_DB = 10.0
ABSENT_DB = -45.0
"""A tone 15 dB under the quietest talker's: not in the mix."""
SETTLE_S = 1.0
WINDOW_S = 1.0
ATTEMPTS = 3
"""Windows to listen over before a check fails (a starved test process plays late
frames as silence; what is in each mix does not change)."""


@pytest.fixture
async def room(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[MediaRoom, list[Any]]]:
    loopback_ice(monkeypatch)
    events: list[dict[str, Any]] = []
    media = MediaRoom("g-top", MediaConfig(peer_timeout_s=5.0, top_n=TOP_N), events.append)
    await media.start()
    yield media, events
    await media.close()


def check(heard: dict[str, Any], listener: str, present: set[str], levels: dict[str, float],
          ) -> None:
    samples = heard[listener]
    msg = f"{listener} heard {describe_tones(samples, list(TONES_HZ.values()))}"
    for name, hz in TONES_HZ.items():
        if name in present:
            assert has_tone(samples, hz, levels[name] - PRESENT_MARGIN_DB), f"{msg}; want {name}"
        else:
            assert lacks_tone(samples, hz, ABSENT_DB), f"{msg}; did not expect {name}"


async def hears(clients: dict[str, RtcClient], expected: dict[str, set[str]],
                levels: dict[str, float]) -> None:
    """Each listener in ``expected`` hears exactly those talkers, in one of a few windows."""
    names = list(expected)
    for attempt in range(ATTEMPTS):
        got = await record_for([clients[n].recorder for n in names], WINDOW_S)
        heard = dict(zip(names, got, strict=True))
        try:
            for listener, present in expected.items():
                check(heard, listener, present, levels)
            return
        except AssertionError:
            if attempt == ATTEMPTS - 1:
                raise


async def test_six_talkers_top_three_nobody_hears_themselves_and_louder_takes_a_place(
    room: tuple[MediaRoom, list[Any]],
) -> None:
    media, events = room
    clients = {n: RtcClient(n, None, amplitude=AMPLITUDES[n]) for n in TONES_HZ}
    clients["x"] = RtcClient("x", None)  # a listener who never talks
    try:
        await asyncio.gather(*(join(media, c) for c in clients.values()))
        answer = clients["a"].pc.remoteDescription.sdp
        assert "urn:ietf:params:rtp-hdrext:ssrc-audio-level" in answer
        await asyncio.gather(*(c.recorder.wait_frames(10) for c in clients.values()))
        for n, hz in TONES_HZ.items():  # everyone starts at once
            clients[n].tone.frequency_hz = hz
        await asyncio.sleep(SETTLE_S)
        levels = dict(LEVEL_DB)
        await hears(clients, {
            "x": {"a", "b", "c"},
            "a": {"b", "c", "d"},  # the 3 loudest of the others
            "c": {"a", "b", "d"},
            "d": {"a", "b", "c"}, "e": {"a", "b", "c"}, "f": {"a", "b", "c"},
        }, levels)
        # speaking events come from the senders' levels, decoded or not
        await eventually(lambda: {e["participant_id"] for e in events
                                  if e.get("type") == "speaking"} >= set(TONES_HZ),
                         5.0, "a speaking event for every talker")

        clients["f"].tone.amplitude = 0.3  # the quietest becomes as loud as the loudest
        levels["f"] = -10.5
        await asyncio.sleep(SETTLE_S)
        await hears(clients, {
            "x": {"a", "b", "f"},  # c, then the quietest of the three, gave way
            "f": {"a", "b", "c"},
            "c": {"a", "b", "f"},
            "d": {"a", "b", "f"},
        }, levels)
    finally:
        for c in clients.values():
            c.tone.stop()
            await c.close()
