"""``sfu.peer.Peer``'s answer (Opus fmtp, RED accepted) and its receive path for RED.

A real aiortc offer (aiortc offers ``red/48000/2`` once ``aiortc_compat``
is installed, as Chrome does); the answer is read as a browser would. RED
packets are built as Chrome sends them (RFC 2198, Opus PT inside, the two
frames before each primary repeated) and handed to the peer's receive path.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from protocol import aiortc_compat
from protocol.opus import Encoder
from protocol.red import RedPacketizer
from protocol.reorder import FRAME_TS
from sfu.levels import levels_dbov
from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ
from sfu.peer import Peer
from sfu.sdp_opus import fmtp_of, red_payload_type
from tests.rtc_helpers import loopback_ice

TICK_S = 0.02


@pytest.fixture
async def offer(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    loopback_ice(monkeypatch)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("audio", direction="sendrecv")
    await client.setLocalDescription(await client.createOffer())
    yield client.localDescription.sdp
    await client.close()


async def test_the_answer_asks_for_fec_dtx_mono_and_accepts_red(offer: str) -> None:
    assert red_payload_type(offer) is not None  # aiortc offers RED once compat is installed
    peer = Peer("alice", on_state=lambda p, s: None)
    try:
        answer = await peer.answer(offer)
    finally:
        await peer.close()
    (params,) = fmtp_of(answer, "opus").values()
    assert params == {"useinbandfec": "1", "usedtx": "1", "stereo": "0",
                      "maxaveragebitrate": "48000"}
    assert red_payload_type(answer) == red_payload_type(offer)


async def test_red_packets_are_unpacked_and_a_lost_primary_is_recovered(offer: str) -> None:
    peer = Peer("alice", on_state=lambda p, s: None)
    try:
        await peer.answer(offer)
        (opus_pt,) = fmtp_of(offer, "opus") or {96: {}}
        red_pt = red_payload_type(offer)
        assert red_pt is not None and peer.voice.opus_pt == opus_pt
        sink = peer._sink(peer.voice)  # what aiortc_compat's tap calls for each packet
        encoder = Encoder(32_000)
        red = RedPacketizer(opus_pt, distance=2)
        n = np.arange(60 * FRAME_SAMPLES)
        pcm = (np.sin(2 * math.pi * 440 * n / SAMPLE_RATE_HZ) * 8000).astype(np.int16)
        played = []
        for k in range(60):
            payload = encoder.encode(pcm[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES])
            data = red.wrap(payload, k * FRAME_TS)
            if k not in (20, 40, 41):  # a single loss and a double one
                sink(aiortc_compat.InboundRtp(k, k * FRAME_TS, red_pt, data), "audio/red")
            played.append(peer.voice.pop(peer.voice.last_packet_at or 0.0))
        c = peer.voice.playout.counters
        assert c.red_recovered == 3 and c.lost == 0
        # a one-frame buffer waits (conceals a tick) for the packet carrying the copy,
        # once per loss; then the copy plays, a frame late
        assert c.concealed == c.underruns <= 2
        heard = [f for f in played if f is not None]
        assert len(heard) >= 55 and min(float(levels_dbov(f)[0]) for f in heard[1:]) > -35
    finally:
        await peer.close()
