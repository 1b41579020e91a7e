"""Speech through the server over impaired loopback links, with real aiortc peers.

See ``tests/voice_network.py`` for the setup (a talker sending Opus with FEC
as a browser does, one link through ``tests.impair.UdpRelay``, the listener
playing out like a browser); scored by wideband PESQ against what was said.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from protocol.opus import FRAME_SAMPLES
from protocol.red import parse_red
from protocol.reorder import FRAME_TS
from sfu.room import MediaConfig, MediaRoom
from tests.impair import CLEAN, Impairment
from tests.rtc_helpers import loopback_ice
from tests.speech import Pcm, holes, pesq_wb, speech
from tests.voice_network import (
    CLIP_S,
    FRAME_S,
    SETTLE_S,
    TAIL_S,
    Arrivals,
    Client,
    Path,
    SpeechTrack,
    talk_and_score,
)

RED_FLOOR = 2.6
"""PESQ floor of a RED listener under 10 % random downlink loss (as for FEC alone above)."""
RED_MARGIN = 0.3
"""Issue #14's target: within 0.3 PESQ of a clean listener."""


@pytest.fixture
async def path(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    loopback_ice(monkeypatch)
    # The room runs in this process, beside every object the suite made so far: keep
    # those out of the cyclic GC, as `disco serve` does with its start-up objects
    # (signaling.cli.freeze_startup_objects). A full collection over them late in the
    # suite stalls the tick for tens of ms, a pause no real server has.
    gc.collect()
    gc.freeze()
    events: list[dict[str, Any]] = []
    room = MediaRoom("g-net", MediaConfig(peer_timeout_s=2.0), events.append)
    await room.start()
    p = Path(room, events)
    try:
        yield p
    finally:
        for c in p.clients:
            await c.close()
        await room.close()
        gc.unfreeze()


@pytest.fixture(scope="module")
def clip() -> Pcm:
    pcm = speech()
    return pcm[: round(CLIP_S / FRAME_S) * FRAME_SAMPLES]


@pytest.mark.parametrize(("up", "down", "floor"), [
    (Impairment(loss=0.10, seed=1), CLEAN, 2.6),
    (CLEAN, Impairment(loss=0.10, seed=2), 2.6),
    (Impairment(jitter_ms=60.0, seed=3), CLEAN, 2.8),
], ids=["10% loss up", "10% loss down", "0-60 ms jitter up"])
async def test_speech_through_an_impaired_link_keeps_its_floor(
    path: Path, clip: Pcm, up: Impairment, down: Impairment, floor: float
) -> None:
    score, gaps, gap_perc = await talk_and_score(path, clip, up, down)
    print(f"{up.describe()} up, {down.describe()} down: PESQ {score:.2f}, {gaps} holes")
    assert score >= floor, f"PESQ {score:.2f} < {floor} ({gaps} holes)"
    assert gap_perc < 2.0


@pytest.mark.parametrize("levels", [False, True], ids=["no level", "RFC 6464 level"])
async def test_a_dtx_silent_talker_is_neither_removed_nor_lost_and_is_heard_again_at_once(
    path: Path, clip: Pcm, levels: bool
) -> None:
    """With the level (as browsers send it) the talker is left undecoded in silence."""
    said = clip[: 100 * FRAME_SAMPLES]
    track = SpeechTrack(said, dtx=True, levels=levels)  # 2 s of speech, then DTX
    talker, listener = Client("talker", track), Client("listener", None)
    path.clients += [talker, listener]
    await talker.join(path.room)
    await listener.join(path.room)
    track.say()
    await asyncio.sleep(2.0 + 3 * path.room.config.peer_timeout_s)  # DTX far past the timeout
    assert "talker" in path.room.participant_ids()
    assert not [e for e in path.events if e.get("type") == "peer_state"
                and e.get("state") == "failed"]
    up_loss = REGISTRY.get_sample_value(
        "disco_sfu_link_loss_percent",
        {"room": "g-net", "participant": "talker", "direction": "up"})
    assert up_loss == 0.0
    assert not [e for e in path.events if e.get("type") == "quality"]  # still excellent
    track.say()  # speaks again after the long DTX pause: no onset lost
    await asyncio.sleep(2.0 + TAIL_S)
    assert track.said_at is not None
    heard = listener.arrivals.play(track.said_at, 2.0 + TAIL_S)
    assert holes(said, heard[: said.shape[0]]) == 0


def repair(arrivals: Arrivals, since: float) -> tuple[int, int]:
    """(primaries lost, of those not repaired by any RED block) among the packets that
    arrived after ``since``."""
    primaries: set[int] = set()
    covered: set[int] = set()
    for at, rtp in arrivals.packets:
        if at < since:
            continue
        seq = rtp.sequence_number  # no wrap within a test: streams start below 32768
        primaries.add(seq)
        if rtp.payload_type in arrivals.red_pts:
            covered.update(seq - b.ts_offset // FRAME_TS for b in parse_red(rtp.payload).redundant)
    missing = set(range(min(primaries), max(primaries) + 1)) - primaries
    return len(missing), len(missing - covered)


RED_ROUNDS = 2
"""Runs of the RED case: the room runs in this process, beside the whole suite, and one
stall of its tick at a double loss costs a run a few tenths; the target must hold in one."""


async def test_a_red_listener_under_downlink_loss_gets_its_lost_frames_repaired(
    path: Path, clip: Pcm
) -> None:
    # Two listeners of the same talker at the same time: one through a clean relay, one
    # through the same relay with 10 % random downlink loss. Both offer RED (aiortc does
    # once aiortc_compat is installed, as Chrome does); the lossy one's receiver reports
    # show the loss and the server wraps its mix in RED; the clean one keeps plain Opus.
    runs: list[dict[str, float]] = []
    for round_ in range(RED_ROUNDS):
        scores = await _red_round(path, clip, seed=2 + round_)
        runs.append(scores)
        # PESQ on this shared machine swings with its load (a clean listener scored
        # 2.7-3.7 here), so the lossy listener is judged against the clean one heard at
        # the same time.
        if scores["lossy"] >= max(scores["clean"] - RED_MARGIN, RED_FLOOR):
            return
    raise AssertionError(f"a RED listener stayed more than {RED_MARGIN} below clean "
                         f"(or under {RED_FLOOR}) in {RED_ROUNDS} runs: {runs}")


async def _red_round(path: Path, clip: Pcm, seed: int) -> dict[str, float]:
    """One talker, a clean and a lossy listener; the repair asserted, the scores returned."""
    track = SpeechTrack(clip)
    talker = Client("talker", track)
    clean, lossy = Client("clean", None), Client("lossy", None)
    path.clients += [talker, clean, lossy]
    await talker.join(path.room)
    await clean.join(path.room, relayed=True)
    await lossy.join(path.room, down=Impairment(loss=0.10, seed=seed), relayed=True)
    await asyncio.sleep(SETTLE_S)
    track.say()
    await asyncio.sleep(CLIP_S + TAIL_S)
    assert track.said_at is not None
    scores = {}
    for c in (clean, lossy):
        heard = c.arrivals.play(track.said_at, CLIP_S + TAIL_S)
        scores[c.name] = pesq_wb(clip, heard)
    playout = lossy.arrivals.last_playout
    assert playout is not None
    n = playout.counters
    lost, unrepaired = repair(lossy.arrivals, track.said_at)
    print(f"clean PESQ {scores['clean']:.2f}; 10% loss down with RED {scores['lossy']:.2f}; "
          f"while speaking {lost} packets lost, {unrepaired} not in any RED packet; "
          f"playout: {n.red_recovered} from RED, {n.recovered} from FEC, "
          f"{n.concealed} concealed")
    assert clean.arrivals.red == 0 and lossy.arrivals.red > 0
    assert lost >= 10 and unrepaired <= lost // 10, (lost, unrepaired)
    assert n.red_recovered >= lost // 2 and n.red_recovered > n.recovered
    for c in (talker, clean, lossy):
        await c.close()
        path.clients.remove(c)
    return scores


BURST_UP_FLOOR = 1.5
"""PESQ floor for uplink Gilbert-Elliott bursts (~7 % loss, mean 2.5 packets) with the
talker sending RED as Chrome does (one earlier frame): RED (or FEC) rebuilds the last
frame of a burst; the rest is concealed. Measured 1.67-1.93 here; Janus AudioBridge
1.5-1.65 through the same relay (``bench.voice_quality --real``, plain Opus up)."""


async def test_a_chrome_like_talker_sends_red_up_and_the_server_repairs_uplink_bursts(
    path: Path, clip: Pcm
) -> None:
    track = SpeechTrack(clip)
    talker, listener = Client("talker", track), Client("listener", None)
    path.clients += [talker, listener]
    await talker.join(path.room, up=Impairment(burst_p=0.03, burst_r=0.4, seed=1),
                      relayed=True)
    await listener.join(path.room)
    await asyncio.sleep(SETTLE_S)
    track.say()
    await asyncio.sleep(CLIP_S + TAIL_S)
    assert track.said_at is not None
    heard = listener.arrivals.play(track.said_at, CLIP_S + TAIL_S)
    score, gaps = pesq_wb(clip, heard), holes(clip, heard)
    assert talker.uplink is not None and talker.uplink.red  # Disco's answer took RED
    n = path.room._peers["talker"].voice.playout.counters  # the server's view
    print(f"bursts up, RED up: PESQ {score:.2f}, {gaps} holes; server: {n.lost} lost, "
          f"{n.red_recovered} from RED, {n.recovered} from FEC, {n.concealed} concealed")
    assert talker.uplink.red_sent > CLIP_S / FRAME_S
    assert n.red_recovered >= 8 and n.red_recovered > n.recovered  # 11-12 measured
    assert score >= BURST_UP_FLOOR, f"PESQ {score:.2f} < {BURST_UP_FLOOR} ({gaps} holes)"
