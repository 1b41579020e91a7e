"""The media room's tick on a fake clock with fake peers: frames in, Opus packets out.

No aiortc, no sockets, no sleeps: ``MediaRoom`` gets a peer factory that
builds ``FakePeer``s, the test pushes 20 ms tone frames into their voice and
music slots and calls ``tick(now)`` with ``now`` advancing 20 ms a step. What
each fake listener is sent is decoded (one libopus decoder per listener, as a
client would) and checked by FFT: who is in whose mix, at which gain. The
wiring with real aiortc peers stays in ``test_sfu_room.py`` and
``test_sfu_music_room.py``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocol.aiortc_compat import ReceiverReport
from protocol.opus import Encoder, packet_has_fec, silence_packet
from protocol.playout import UplinkStats
from protocol.reorder import FRAME_TS
from sfu.inbound import InboundStream, JitterSlot, MonoOpusDecoder
from sfu.levels import HANGOVER_S, levels_dbov
from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ, Pcm
from sfu.music import MusicPlayer, Track
from sfu.room import (
    LINKS_EVERY_TICKS,
    LIVENESS_EVERY_TICKS,
    MediaConfig,
    MediaPeer,
    MediaRoom,
    PeerStateCallback,
    StaticControls,
    TickResult,
)
from tests.rtc_helpers import has_tone, lacks_tone, steady_tone_level_db
from tests.speech import speech

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE_HZ
T0 = 1000.0
"""The fake clock's start (any value: the room reads no other clock)."""
TONES = {"a": 440.0, "b": 660.0, "c": 990.0, "d": None}
MUSIC_HZ = 330.0
AMPLITUDE = 0.25
DUCK_DB = -12.0
TIMEOUT_S = 1.0
WINDOW_TICKS = 20
"""Listen over the last 0.4 s."""


def tone(freq_hz: float, index: int) -> Pcm:
    """Frame ``index`` of a continuous sine (so consecutive frames join without a click)."""
    n = np.arange(index * FRAME_SAMPLES, (index + 1) * FRAME_SAMPLES)
    return (np.sin(2 * math.pi * freq_hz * n / SAMPLE_RATE_HZ) * AMPLITUDE * 32_767).astype(
        np.int16
    )


@dataclass
class FakePeer:
    """A ``MediaPeer`` without a network: slots to fill, and a decoder for what it is sent."""

    participant_id: str
    music_mids: Collection[str] = ()
    voice: JitterSlot | InboundStream = field(default_factory=JitterSlot)
    music: dict[str, JitterSlot] = field(default_factory=dict)
    listening: bool = True
    heard_at: float | None = None
    failed: bool = False
    detached: bool = False
    closed: bool = False
    decoded: list[Pcm] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    reports: list[ReceiverReport] = field(default_factory=list)
    """RTCP receiver reports to hand the room at its next look (the test fills it)."""
    uplink: UplinkStats | None = None
    skipped: int = 0
    _decoder: MonoOpusDecoder = field(default_factory=MonoOpusDecoder)

    def __post_init__(self) -> None:
        self.music = {mid: JitterSlot() for mid in self.music_mids}

    def send(self, payload: bytes) -> None:
        self.payloads.append(payload)
        self.decoded.extend(self._decoder.decode(payload))

    def take_reports(self) -> list[ReceiverReport]:
        reports, self.reports = self.reports, []
        return reports

    def take_uplink(self) -> UplinkStats | None:
        return self.uplink

    def skip(self, frames: int) -> None:
        self.skipped += frames

    def last_heard(self) -> float | None:
        return None if self.failed else self.heard_at

    def fail(self) -> None:
        self.failed = True
        self.detached = True

    def detach(self) -> None:
        self.detached = True

    async def answer(self, offer_sdp: str) -> str:
        return f"answer to {offer_sdp}"

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        return None

    async def close(self) -> None:
        self.closed = True

    def heard(self, ticks: int = WINDOW_TICKS) -> Pcm:
        """The last ``ticks`` frames this listener was sent, decoded."""
        return np.concatenate(self.decoded[-ticks:])


class Harness:
    """A MediaRoom on a fake clock: ``run(n)`` pushes each talker's frame and ticks."""

    def __init__(self, controls: StaticControls | None = None,
                 player: MusicPlayer | None = None, config: MediaConfig | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.event_times: list[float] = []
        self.peers: dict[str, FakePeer] = {}
        self.controls = controls or StaticControls()
        self.room = MediaRoom(
            "g-tick",
            config or MediaConfig(duck_db=DUCK_DB, peer_timeout_s=TIMEOUT_S),
            self._event,
            controls=self.controls,
            peer_factory=self._make,
            player=player,
        )
        self.talking: dict[str, float] = {}
        """participant -> tone frequency they send now (absent: sends nothing)."""
        self.music_hz: dict[tuple[str, str], float] = {}
        self.n = 0
        self.now = T0
        self.results: list[TickResult] = []

    def _make(self, pid: str, music_mids: Collection[str], on_state: PeerStateCallback
              ) -> MediaPeer:
        peer = FakePeer(pid, music_mids=music_mids)
        self.peers[pid] = peer
        return peer

    def _event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.event_times.append(self.now)

    async def join(self, *pids: str, music_mids: Collection[str] = ()) -> None:
        for pid in pids:
            answer = await self.room.connect(pid, f"offer {pid}", music_mids)
            assert answer == f"answer to offer {pid}"
            self.peers[pid].heard_at = self.now

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.n += 1
            self.now = T0 + self.n * FRAME_S
            for pid, hz in self.talking.items():
                peer = self.peers[pid]
                assert isinstance(peer.voice, JitterSlot)  # PCM in: the tick's own tests
                peer.voice.push(tone(hz, self.n), self.now)
                peer.heard_at = self.now
            for (pid, mid), hz in self.music_hz.items():
                self.peers[pid].music[mid].push(tone(hz, self.n), self.now)
            self.results.append(self.room.tick(self.now))

    def times_of(self, kind: str, pid: str) -> list[float]:
        return [t for e, t in zip(self.events, self.event_times, strict=True)
                if e["type"] == kind and e.get("participant_id") == pid]


def assert_hears(peer: FakePeer, present: set[str], absent: set[str]) -> None:
    heard = peer.heard()
    for name in present:
        assert has_tone(heard, TONES[name] or 0), f"{peer.participant_id} should hear {name}"
    for name in absent:
        hz = TONES[name]
        if hz is not None:
            assert lacks_tone(heard, hz), f"{peer.participant_id} should not hear {name}"


async def test_mix_minus_speaking_events_and_one_encode_per_distinct_mix() -> None:
    h = Harness()
    await h.join("a", "b", "c", "d")
    h.talking = {"a": 440.0, "b": 660.0, "c": 990.0}
    h.run(25)
    for name in "abc":
        assert_hears(h.peers[name], present=set("abc") - {name}, absent={name})
    assert_hears(h.peers["d"], present=set("abc"), absent=set())
    assert h.results[-1].encodes == 4  # a, b, c each hear the two others; d hears all three
    assert h.room.last_encodes == 4
    # the gate opens on the first loud frame: one event each, on the first tick
    for name in "abc":
        assert h.times_of("speaking", name) == [pytest.approx(T0 + FRAME_S)]
    assert h.times_of("speaking", "d") == []
    assert h.room.speaking() == {"a", "b", "c"}
    assert all(len(p.decoded) == 25 for p in h.peers.values())  # a packet every tick


async def test_mute_is_asked_of_the_controls_each_tick() -> None:
    h = Harness()
    await h.join("a", "b", "c")
    h.talking = {"a": 440.0, "b": 660.0, "c": 990.0}
    h.run(25)
    last_loud = h.now
    h.controls.muted.add("c")  # the owner (the signaling room) mutes c; no call into media
    h.run(50)
    assert_hears(h.peers["a"], present={"b"}, absent={"a", "c"})
    assert_hears(h.peers["b"], present={"a"}, absent={"b", "c"})
    assert_hears(h.peers["c"], present={"a", "b"}, absent={"c"})  # muted still hears
    # stopped_speaking once the hangover after c's last counted frame has passed
    (stopped,) = h.times_of("stopped_speaking", "c")
    assert stopped == pytest.approx(last_loud + HANGOVER_S, abs=FRAME_S + 1e-9)
    h.controls.muted.discard("c")
    h.run(25)
    assert_hears(h.peers["a"], present={"b", "c"}, absent={"a"})


async def test_volume_changes_one_listener_only() -> None:
    h = Harness()
    await h.join("a", "b", "c")
    h.talking = {"a": 440.0, "b": 660.0}
    h.run(25)
    before_c, before_b = h.peers["c"].heard(), h.peers["b"].heard()
    h.room.set_volume("c", "a", 0.25)  # c turns a down by 12 dB
    h.run(25)
    after_c, after_b = h.peers["c"].heard(), h.peers["b"].heard()

    def change(before: Pcm, after: Pcm, hz: float) -> float:
        return steady_tone_level_db(after, hz, 50) - steady_tone_level_db(before, hz, 50)

    assert change(before_c, after_c, 440.0) == pytest.approx(20 * math.log10(0.25), abs=1.0)
    assert abs(change(before_c, after_c, 660.0)) < 0.5  # b's voice in c's mix: untouched
    assert abs(change(before_b, after_b, 440.0)) < 0.5  # a's voice in b's mix: untouched
    h.room.set_volume("c", "a", 0.0)
    h.run(25)
    assert_hears(h.peers["c"], present={"b"}, absent={"a"})


async def test_client_music_is_ducked_while_anyone_speaks() -> None:
    h = Harness()
    await h.join("dj", music_mids=["m1"])
    await h.join("a", "l")
    h.music_hz = {("dj", "m1"): MUSIC_HZ}
    h.run(25)
    quiet = h.peers["l"].heard()
    assert has_tone(quiet, MUSIC_HZ)
    assert h.times_of("speaking", "dj") == []  # music is not a voice
    h.talking = {"a": 440.0}
    h.run(25)
    talking = h.peers["l"].heard()
    h.talking = {}
    h.run(int((HANGOVER_S + 0.4 + 0.2) / FRAME_S))  # hangover, release ramp, margin
    after = h.peers["l"].heard()
    base = steady_tone_level_db(quiet, MUSIC_HZ, 50)
    assert steady_tone_level_db(talking, MUSIC_HZ, 50) - base == pytest.approx(DUCK_DB, abs=1.0)
    assert steady_tone_level_db(after, MUSIC_HZ, 50) - base == pytest.approx(0.0, abs=0.5)
    assert has_tone(talking, 440.0) and has_tone(h.peers["dj"].heard(WINDOW_TICKS), MUSIC_HZ)
    assert h.room.music_state()["client_music"] == ["dj"]


class ToneDecoder:
    """A music file that is an endless sine at ``MUSIC_HZ`` (``MusicPlayer.open_decoder``)."""

    def __init__(self, path: Path) -> None:
        self.index = 0

    def next_frame(self) -> Pcm:
        self.index += 1
        return tone(MUSIC_HZ, self.index)

    def close(self) -> None:
        pass


async def test_music_stops_on_the_tick_after_the_controls_disallow_it() -> None:
    controls = StaticControls(music_allowed=True)
    player = MusicPlayer(open_decoder=ToneDecoder)  # type: ignore[arg-type]
    h = Harness(controls, player)
    await h.join("a", "b")
    player.apply("play", Track(source="song.ogg", by="a", path=Path("song.ogg")))
    h.run(25)
    assert has_tone(h.peers["b"].heard(), MUSIC_HZ)
    assert h.events[-1]["type"] == "music_state" and h.events[-1]["status"] == "playing"

    controls.music_allowed = False  # a downgrade: the billing edge flips the room's fact
    h.run(1)
    states = [e for e in h.events if e["type"] == "music_state"]
    assert states[-1]["status"] == "stopped" and states[-1]["allowed"] is False
    assert h.event_times[-1] == pytest.approx(h.now)  # on the very next tick
    h.run(25)
    assert lacks_tone(h.peers["b"].heard(), MUSIC_HZ)
    assert len([e for e in h.events if e["type"] == "music_state"]) == len(states)  # once
    with pytest.raises(Exception, match="not included"):
        await h.room.music("play", by="a", source="song.ogg")

    controls.music_allowed = True
    h.run(1)
    assert h.events[-1] == {**h.events[-1], "type": "music_state", "allowed": True}


async def test_a_silent_peer_is_expired_at_the_first_check_past_the_timeout() -> None:
    h = Harness()
    await h.join("a", "b")
    h.talking = {"a": 440.0, "b": 660.0}
    h.run(10)
    b_last = h.now
    del h.talking["b"]  # b vanishes: nothing more arrives, no goodbye
    h.run(4 * LIVENESS_EVERY_TICKS)

    checks = [T0 + n * FRAME_S for n in range(1, h.n + 1) if n % LIVENESS_EVERY_TICKS == 0]
    expected = next(t for t in checks if t - b_last > TIMEOUT_S)
    expired_at = [T0 + (i + 1) * FRAME_S for i, r in enumerate(h.results) if r.expired]
    assert expired_at == [pytest.approx(expected)]  # once, at that check, not before
    (result,) = [r for r in h.results if r.expired]
    assert [p.participant_id for p in result.expired] == ["b"]
    assert h.times_of("peer_state", "b") == [pytest.approx(expected)]
    assert h.events[h.event_times.index(expected)] == {
        "type": "peer_state", "participant_id": "b", "state": "failed"}
    assert h.peers["b"].failed and not h.peers["a"].failed
    # the shell drops it (here by hand: the test has no clock task)
    await h.room.disconnect("b")
    assert h.room.participant_ids() == ["a"] and h.peers["b"].closed


async def test_a_listener_that_stopped_listening_is_sent_nothing() -> None:
    h = Harness()
    await h.join("a", "b")
    h.talking = {"a": 440.0}
    h.peers["b"].listening = False
    h.run(5)
    assert h.peers["b"].decoded == [] and len(h.peers["a"].decoded) == 5


async def test_opus_packets_through_the_inbound_stream_and_a_dtx_pause() -> None:
    """The production inbound path under the tick: RTP packets in, a loss rebuilt from
    FEC, then silence in DTX (libopus's 1-byte frames, sent as WebRTC does: the
    first, then one every 400 ms): silence, not loss, and not a vanished peer."""
    h = Harness()
    await h.join("a", "b")
    stream = InboundStream("a")
    h.peers["a"].voice = stream
    encoder = Encoder(48_000, fec=True, packet_loss_perc=10)
    encoder.set_dtx(True)
    seq = 0
    in_dtx = 0
    for k in range(1, 301):
        now = T0 + (h.n + 1) * FRAME_S  # the tick's time: packets arrive just before it
        pcm = tone(440.0, k) if k <= 100 else np.zeros(FRAME_SAMPLES, dtype=np.int16)
        payload = encoder.encode(pcm)
        in_dtx = in_dtx + 1 if len(payload) <= 2 else 0
        if k != 40 and (in_dtx == 0 or in_dtx % 20 == 1):
            stream.packet(seq % 65_536, k * FRAME_TS, payload, now)
        if in_dtx == 0 or in_dtx % 20 == 1:
            seq += 1
        if stream.last_packet_at is not None:
            h.peers["a"].heard_at = stream.last_packet_at  # what Peer.last_heard reads
        h.peers["b"].heard_at = now  # b sends (silence) all along
        h.run(1)
        if k == 100:
            heard = h.peers["b"].heard(95)
            levels = [float(levels_dbov(f)[0]) for f in np.split(heard, 95)]
            # the loss dips (PLC, then FEC at 10%) for two frames; nothing falls silent
            assert min(levels) > -40 and sum(level < -25 for level in levels) <= 2
    c = stream.playout.counters
    assert (c.lost, c.recovered) == (1, 1) and c.dtx > 100
    assert not any(r.expired for r in h.results) and not h.peers["a"].failed
    assert h.times_of("stopped_speaking", "a")  # a pause, heard as one
    assert lacks_tone(h.peers["b"].heard(), 440.0)


async def test_loss_reports_turn_on_fec_for_the_encoder_of_the_lossy_listener_only() -> None:
    """a and b talk; c reports 10% loss: the encoder feeding c (shared with d, who hears
    the same mix) gets FEC at 15% expected loss and 16 kbps more, by ctls on the live
    encoder; the encoders of a's and b's mixes do not. (Speech, not tones: libopus codes
    FEC only for frames its VAD finds active.)"""
    voice = speech()
    h = Harness()
    await h.join("a", "b", "c", "d")

    def talk(ticks: int) -> None:
        for _ in range(ticks):
            frames = voice.shape[0] // FRAME_SAMPLES
            for pid, offset in (("a", 0), ("b", frames // 2)):  # two talkers, two phrases
                k = (h.n + offset) % frames
                slot = h.peers[pid].voice
                assert isinstance(slot, JitterSlot)
                slot.push(voice[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES], h.now)
                h.peers[pid].heard_at = h.now
            h.run(1)

    talk(2 * LINKS_EVERY_TICKS)
    assert h.room.encoder_settings("c") == (False, 0, 32_000)
    clean = h.peers["c"].payloads[-LINKS_EVERY_TICKS:]
    assert not any(packet_has_fec(p) for p in h.peers["c"].payloads)
    h.peers["c"].reports.append(ReceiverReport(fraction_lost=26, jitter_s=0.004, rtt_s=0.05))
    talk(LINKS_EVERY_TICKS)  # the next look at the links
    assert h.room.encoder_settings("c") == (True, 15, 48_000)  # 10.2% -> the next 5% step
    assert h.room.encoder_settings("d") == (True, 15, 48_000)  # c and d share a mix
    assert h.room.encoder_settings("a") == (False, 0, 32_000)  # a hears b
    assert h.room.encoder_settings("b") == (False, 0, 32_000)  # b hears a
    talk(LINKS_EVERY_TICKS)
    lossy = h.peers["c"].payloads[-LINKS_EVERY_TICKS:]
    assert sum(map(packet_has_fec, lossy)) >= LINKS_EVERY_TICKS // 2
    assert sum(map(len, lossy)) > 1.2 * sum(map(len, clean))
    for pid in "ab":
        assert not any(packet_has_fec(p) for p in h.peers[pid].payloads)


async def test_quality_event_goes_out_when_the_class_changes() -> None:
    h = Harness()
    await h.join("a", "b")
    h.talking = {"a": 440.0}
    h.run(2 * LINKS_EVERY_TICKS)
    assert [e for e in h.events if e["type"] == "quality"] == []  # excellent: no news
    h.peers["b"].uplink = UplinkStats(expected=50, lost_perc=12.0, jitter_ms=30.0)
    h.peers["b"].reports.append(ReceiverReport(fraction_lost=40, jitter_s=0.03, rtt_s=0.2))
    h.run(LINKS_EVERY_TICKS)
    (event,) = [e for e in h.events if e["type"] == "quality"]
    assert event["participant_id"] == "b" and event["quality"] in ("good", "poor")
    assert event["loss_percent"] == pytest.approx(15.6) and event["rtt_ms"] == 200.0


async def test_a_piped_source_is_heard_by_the_plan_and_the_tap_gets_only_local_frames() -> None:
    """Voice from another node (``sfu.pipe.PipedSource``) is one more speaker, never a
    listener; the tap sees the frames of the room's own unmuted peers, never a source's."""
    from sfu.pipe import PipedSource

    h = Harness()
    await h.join("a", "b")
    piped = PipedSource()
    h.room.add_source("g", piped)
    h.room.set_audibility({"a": {"g": 1.0}, "b": {}, "g": {"a": 1.0}})
    tapped: list[set[str]] = []
    h.room.voice_tap = lambda frames: tapped.append(set(frames))
    h.talking = {"a": 440.0, "b": 660.0}
    h.controls.muted.add("b")
    for n in range(30):
        piped.push(n, tone(990.0, n), h.now)
        h.run(1)
    g_heard = h.peers["a"].heard()
    assert has_tone(g_heard, 990.0), "a hears the piped speaker"
    assert lacks_tone(h.peers["b"].heard(), 990.0), "b is out of range by the plan"
    assert h.room.speaking() >= {"g"}
    assert tapped and all(names == {"a"} for names in tapped)  # b muted, g not local
    h.room.remove_source("g")
    h.run(WINDOW_TICKS + 5)
    assert lacks_tone(h.peers["a"].heard(), 990.0)
    assert "g" not in h.room.speaking()
    with pytest.raises(Exception, match="participant of this room"):
        h.room.add_source("a", PipedSource())


class LevelledSlot(JitterSlot):
    """PCM in, plus the RFC 6464 level a browser would put in each packet."""

    level_dbov = -127.0

    def take_level(self, now: float) -> float | None:
        return self.level_dbov


@pytest.mark.parametrize("room_wide", [True, False], ids=["group", "nearby"])
async def test_top_n_is_room_wide_in_a_group_and_per_listener_nearby(room_wide: bool) -> None:
    """Three talkers, each heard by one listener only (as strangers far apart), N = 1.
    A group decodes its N + 1 loudest, so the quietest talker's listener hears nobody;
    the nearby room decodes everyone above the floor, so each hears their own talker."""
    h = Harness(config=MediaConfig(duck_db=DUCK_DB, peer_timeout_s=TIMEOUT_S, top_n=1,
                                   room_wide_top_n=room_wide))
    await h.join("a", "b", "c", "x", "y", "z")
    pairs = {"a": "x", "b": "y", "c": "z"}
    audible: dict[str, dict[str, float]] = {}
    for (talker, listener), level in zip(pairs.items(), (-10.0, -12.0, -14.0), strict=True):
        slot = LevelledSlot()
        slot.level_dbov = level
        h.peers[talker].voice = slot
        audible[talker] = {listener: 1.0}
        audible[listener] = {talker: 1.0}
    h.room.set_audibility(audible)
    h.talking = {"a": 440.0, "b": 660.0, "c": 990.0}
    h.run(25)
    assert_hears(h.peers["x"], present={"a"}, absent={"b", "c"})
    assert_hears(h.peers["y"], present={"b"}, absent={"a", "c"})
    if room_wide:
        assert_hears(h.peers["z"], present=set(), absent={"a", "b", "c"})
    else:
        assert_hears(h.peers["z"], present={"c"}, absent={"a", "b"})


async def test_a_sender_without_levels_is_mixed_from_the_first_frame_of_a_word() -> None:
    """A client that sends no RFC 6464 level is ranked by its last decoded frame, so on
    a word's first frame it is not among the selected yet; it is decoded all the same,
    and that frame is in the mix (an onset clipped off every word cost 0.2 PESQ)."""
    h = Harness()
    await h.join("a", "b")
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    for _ in range(150):  # 3 s of digital silence: a's envelope falls under the floor
        for pid in ("a", "b"):
            peer = h.peers[pid]
            assert isinstance(peer.voice, JitterSlot)
            peer.voice.push(silence, h.now)
            peer.heard_at = h.now
        h.run(1)
    sent_before = len(h.peers["b"].decoded)
    h.talking = {"a": 440.0}
    h.run(3)
    onset = h.peers["b"].decoded[sent_before]  # b's mix of the tick a started talking
    assert float(levels_dbov(onset)[0]) > -30.0, "the word's first frame was left out"



async def test_loss_reported_while_a_mix_is_silent_reaches_its_next_encoder() -> None:
    """c reports loss while nobody speaks (its mix silent, no encoder behind it): the
    once-a-second look at the links retunes the FEC state without an encoder (it used
    to fail the tick), and when a talks, c's new encoder has FEC from the start."""
    voice = speech()
    h = Harness()
    await h.join("a", "c", "d")
    h.run(5)  # nobody speaks: the one mix is silent
    h.peers["c"].reports.append(ReceiverReport(fraction_lost=26, jitter_s=0.004, rtt_s=0.05))
    h.run(LINKS_EVERY_TICKS)  # the links' look falls in the silence
    assert h.results[-1].encodes == 0
    frames = voice.shape[0] // FRAME_SAMPLES
    for i in range(25):
        slot = h.peers["a"].voice
        assert isinstance(slot, JitterSlot)
        slot.push(voice[(i % frames) * FRAME_SAMPLES:(i % frames + 1) * FRAME_SAMPLES], h.now)
        h.peers["a"].heard_at = h.now
        h.run(1)
    assert h.room.encoder_settings("c") == (True, 15, 48_000)
    assert sum(map(packet_has_fec, h.peers["c"].payloads[-25:])) >= 10


async def test_the_clock_hands_a_big_room_out_in_chunks_and_lets_the_loop_read_between(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``_run`` sends ``SEND_CHUNK_LISTENERS`` listeners at a time: every listener gets
    its own mix exactly once, and a callback queued before the sending (a packet that
    arrived meanwhile) runs before the last listener is sent to, not after all of them."""
    import asyncio

    import sfu.room as room_module

    monkeypatch.setattr(room_module, "SEND_CHUNK_LISTENERS", 2)
    h = Harness()
    names = [f"l{i}" for i in range(7)]
    await h.join("a", "b", *names)
    h.talking = {"a": 440.0, "b": 660.0}
    h.run(10)
    sent_before = {pid: len(p.payloads) for pid, p in h.peers.items()}
    result = h.room.plan(h.now + FRAME_S)
    assert {len(ls) for _, ls in result.sends} == {1, 7}  # a hears b, b hears a, the rest both
    order: list[str] = []
    for pid in h.peers:
        peer = h.peers[pid]
        peer.send = (lambda p, f=peer.send, pid=pid: (order.append(pid), f(p))[1])  # type: ignore[method-assign]
    asyncio.get_running_loop().call_soon(order.append, "loop")
    await h.room._deliver(result)
    assert sorted(x for x in order if x != "loop") == sorted(h.peers)  # each exactly once
    assert 0 < order.index("loop") < len(order) - 1
    for pid, peer in h.peers.items():
        assert len(peer.payloads) == sent_before[pid] + 1
    assert result.deliver(0, 0) == 9  # nine listeners in all


async def test_a_silent_mix_is_not_encoded_and_sound_comes_back_at_once() -> None:
    """Nobody speaks: after one encoded frame of silence (the encoder's lookahead out),
    every listener gets the steady silent packet and the room encodes nothing. When a
    starts, b and c hear a from the first frames (a fresh encoder) and only their mix is
    encoded; a's own mix (nobody) stays the silent packet."""
    silent = silence_packet(MediaConfig().bitrate_bps)
    h = Harness()
    await h.join("a", "b", "c")
    h.run(6)
    assert [r.encodes for r in h.results] == [1, 0, 0, 0, 0, 0]
    for peer in h.peers.values():
        assert peer.payloads[1:] == [silent] * 5
        assert np.abs(np.concatenate(peer.decoded[2:])).max() <= 2  # silence, played
    h.talking = {"a": 440.0}
    h.run(3)
    onset = np.concatenate(h.peers["b"].decoded[-3:])
    assert has_tone(onset, 440.0)
    h.run(WINDOW_TICKS)
    assert_hears(h.peers["c"], present={"a"}, absent=set())
    assert h.peers["a"].payloads[-1] == silent
    assert h.results[-1].encodes == 1  # b and c's mix; a hears nobody
    h.talking = {}
    h.run(30)  # a stops: after the speaking gate closes, silence again
    assert h.results[-1].encodes == 0


async def test_fec_outlives_the_silence_of_its_mix() -> None:
    """c reports loss while a talks to c and d: FEC on for their mix. a pauses long
    enough for the mix to go silent (its encoder let go, its FEC state kept); when a
    talks again the new encoder has FEC from its first frames (speech: libopus codes
    FEC only for frames its VAD finds active)."""
    voice = speech()
    h = Harness()
    await h.join("a", "c", "d")

    def talk(ticks: int) -> None:  # from the phrase's start
        frames = voice.shape[0] // FRAME_SAMPLES
        for i in range(ticks):
            k = i % frames
            slot = h.peers["a"].voice
            assert isinstance(slot, JitterSlot)
            slot.push(voice[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES], h.now)
            h.peers["a"].heard_at = h.now
            h.run(1)

    talk(LINKS_EVERY_TICKS)
    h.peers["c"].reports.append(ReceiverReport(fraction_lost=26, jitter_s=0.004, rtt_s=0.05))
    talk(LINKS_EVERY_TICKS)
    assert h.room.encoder_settings("c") == (True, 15, 48_000)
    h.run(40)  # a is quiet: the gate closes, c's mix (and a's) is silent
    assert h.results[-1].encodes == 0
    talk(25)
    assert sum(r.encodes for r in h.results[-25:]) >= 20
    assert h.room.encoder_settings("c") == (True, 15, 48_000)
    assert sum(map(packet_has_fec, h.peers["c"].payloads[-25:])) >= 10


async def test_the_clock_reports_how_late_the_loop_woke_it() -> None:
    """``disco_sfu_clock_lag_seconds``: a room's running clock, a loop held 60 ms by
    something else; the histogram counts every tick and one at least 40 ms late."""
    import asyncio
    import time

    from prometheus_client import REGISTRY

    def count(le: str) -> float:
        value = REGISTRY.get_sample_value("disco_sfu_clock_lag_seconds_bucket", {"le": le})
        return value or 0.0

    h = Harness()
    before_total, before_late = count("+Inf"), count("+Inf") - count("0.04")
    await h.room.start()
    try:
        await asyncio.sleep(0.2)  # ten ticks on a free loop
        time.sleep(0.06)  # noqa: ASYNC251 (the point: something holds the loop)
        await asyncio.sleep(0.1)
    finally:
        await h.room.close()
    ticks = count("+Inf") - before_total
    late = count("+Inf") - count("0.04") - before_late
    assert ticks >= 10
    assert late >= 1  # the tick due during the 60 ms woke >= 40 ms late
