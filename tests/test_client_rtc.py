"""The desktop client's receiver (``clients.desktop.rtc.MediaLink``) under downlink loss.

A talker sends speech through a real ``MediaRoom``; the desktop client's
``MediaLink`` receives the mix over a ``UdpRelay`` that loses 10% of the
packets on the way down. Its playout path (the server's own: reorder, FEC
from the next packet, PLC) must leave holes in under 2% of the speech frames.
aiortc's own receiver, which it replaced, left 21% at 4% loss.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from clients.desktop.audio import MicControl
from clients.desktop.rtc import MediaLink, MicTrack
from sfu.room import MediaConfig, MediaRoom
from tests.impair import Impairment, UdpRelay
from tests.rtc_helpers import loopback_ice
from tests.speech import Pcm, holes, pesq_wb, speech
from tests.voice_network import (
    CLIP_S,
    CONNECT_TIMEOUT_S,
    FRAME_S,
    SETTLE_S,
    TAIL_S,
    Client,
    SpeechTrack,
    host_port,
    via,
)

FRAME_SAMPLES = 960


@pytest.fixture
async def room(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MediaRoom]:
    loopback_ice(monkeypatch)
    media = MediaRoom("g-desk", MediaConfig(peer_timeout_s=2.0), lambda e: None)
    await media.start()
    yield media
    await media.close()


async def test_under_10_percent_downlink_loss_holes_stay_under_2_percent(
    room: MediaRoom,
) -> None:
    clip = speech()[: round(CLIP_S / FRAME_S) * FRAME_SAMPLES]
    track = SpeechTrack(clip)
    talker = Client("talker", track)
    heard: list[tuple[float, Pcm]] = []
    connected = asyncio.Event()
    loop = asyncio.get_running_loop()

    def state(s: str) -> None:
        if s == "connected":
            connected.set()

    link = MediaLink([], MicTrack(None, MicControl()), None,
                     lambda pcm: heard.append((loop.time(), pcm)), state)
    relay = await UdpRelay.start(("127.0.0.1", 9), down=Impairment(loss=0.10, seed=7))
    try:
        await talker.join(room)
        offer, _ = await link.offer()
        answer = await room.connect("desktop", via(offer, relay.address[1]))
        relay.target = ("127.0.0.1", host_port(answer))
        await link.accept(via(answer, relay.address[1]))
        await asyncio.wait_for(connected.wait(), CONNECT_TIMEOUT_S)
        await asyncio.sleep(SETTLE_S)  # the server turns FEC on from our receiver reports
        track.say()
        await asyncio.sleep(CLIP_S + TAIL_S)
        assert track.said_at is not None
        said = track.said_at
        out = np.concatenate([pcm for at, pcm in heard if at >= said])
        gaps = holes(clip, out)
        frames = clip.shape[0] // FRAME_SAMPLES
        score = pesq_wb(clip, out)
        print(f"desktop client, 10% downlink loss: {gaps} holes in {frames} frames, "
              f"PESQ {score:.2f}, lost {relay.down.lost}/{relay.down.sent}")
        assert relay.down.lost >= 0.05 * relay.down.sent  # the loss did happen
        assert gaps < 0.02 * frames
        assert link.playout.counters.recovered > 0  # FEC from the server's encoder
    finally:
        await link.close()
        await talker.close()
        relay.close()
