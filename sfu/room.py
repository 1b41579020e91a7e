"""A media room: its participants' peer connections and the 20 ms mixing clock.

The signaling layer owns who is in which room; it calls this module's public
API (``MediaRoom``) and forwards the wire events it receives via ``on_event``.

The clock: one asyncio task per room. Tick n runs at ``start + n * 20 ms`` on
the loop's monotonic clock, so timing errors never accumulate (no drift), and
a tick that finds a participant's slot empty mixes silence for them instead of
waiting (a late frame never stalls the room). One task per room rather than
one per process because rooms then start at different phases of the 20 ms
period, spreading the encode work over it instead of bursting every room's
mixing at the same instant (a burst delays every sender behind it), and
because a room's lifecycle (start/close, a crash in one room's tick) stays
its own. After a long stall (the process was starved) the clock catches up
at most ``MAX_CATCHUP_TICKS`` ticks and then skips ahead, counting the loss.

The tick itself (``MediaRoom.tick(now)``) never awaits and reads the time it
is given: its inputs are the peers' inbound streams (``MediaPeer.voice`` and
``music``, each popped once a tick: ``sfu.inbound``), the music
player, the mix plan and the room's controls (``RoomControls``: who is muted,
whether music is allowed, owned by the signaling layer and asked every
tick); its outputs are Opus payloads handed to ``MediaPeer.send``, events,
and the peers it gave up on. Peers come from an injected ``PeerFactory``, so
``tests/test_sfu_tick.py`` drives it with fake peers and a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from common.errors import BadRequest
from common.tasks import cancel_and_wait
from protocol.aiortc_compat import ReceiverReport
from protocol.playout import UplinkStats
from sfu import metrics
from sfu.ducking import Ducker
from sfu.encoders import MixEncoders
from sfu.errors import BadCandidate, BadMusicRequest, BadVolume, MusicNotAllowed
from sfu.fec_policy import LossReports, QualityTracker
from sfu.inbound import FrameSource, VoiceSource
from sfu.levels import SpeakingDetector, levels_dbov
from sfu.mixer import FRAME_MS, MAX_GAIN, Acc, MixPlan, Pcm, mix
from sfu.music import ACTIONS, MusicPlayer, Track, probe_audio, resolve_source
from sfu.peer import Peer, read_sockets
from sfu.speakers import DEFAULT_TOP_N, MIN_DBOV, SpeakerSelector, limit_recipes

if TYPE_CHECKING:
    from common.settings import Settings

logger = logging.getLogger(__name__)

FRAME_S = FRAME_MS / 1000
MAX_CATCHUP_TICKS = 5
LIVENESS_EVERY_TICKS = 25
"""Check for silent peers twice a second."""
JITTER_WAIT_SAMPLE_EVERY_TICKS = 5
"""Time the inbound frames of every 5th tick (``disco_sfu_jitter_wait_seconds``)."""
LINKS_EVERY_TICKS = 50
"""Once a second: read RTCP loss reports, retune the encoders' FEC, judge quality."""
SEND_CHUNK_LISTENERS = 40
"""The clock hands out a tick's packets this many listeners at a time, letting the loop
run in between: on a socket the loop reads (not polled: a TURN relay's, or polling off) a
packet read late is timed late, and a tick that kept the loop for all 200 listeners of a
big room (~7 ms) widened every such sender's measured jitter, and so its playout depth,
by as much (``bench.voice --sizes 200``); WebSockets and RTCP wait less too."""


@dataclass(frozen=True)
class MediaConfig:
    """What a room needs from the settings (see ``from_settings``)."""

    public_ip: str | None = None
    stun_urls: tuple[str, ...] = ()
    duck_db: float = -12.0
    bitrate_bps: int = 32_000
    music_dir: Path | None = None
    upload_dir: Path | None = None
    max_upload_bytes: int = 50 * 1024 * 1024
    peer_timeout_s: float = 5.0
    """A peer whose inbound audio stops this long is reported failed and removed."""
    fast_send: bool = True
    """Send each listener's RTP ourselves (``sfu.outbound``); False: aiortc's sender loop."""
    polled_receive: bool = True
    """Read each connected peer's socket at the tick (``aiortc_compat.polled``; needs
    ``fast_send``); False: the event loop wakes for each datagram."""
    top_n: int = DEFAULT_TOP_N
    """Talkers each listener hears at once: the loudest by their RFC 6464 level."""
    room_wide_top_n: bool = True
    """Decode only the room's N + 1 loudest (a group: everyone hears everyone). False
    where each listener hears a different set (nearby): every sender above the
    speaking floor is decoded, and each listener's mix keeps its own N loudest."""

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaConfig:
        return cls(
            public_ip=settings.rtc_public_ip,
            stun_urls=tuple(settings.stun_urls),
            duck_db=settings.music_duck_db,
            bitrate_bps=settings.opus_bitrate_bps,
            music_dir=settings.music_dir,
            upload_dir=settings.upload_dir,
            max_upload_bytes=settings.max_upload_bytes,
            fast_send=settings.rtc_fast_send,
            polled_receive=settings.rtc_polled_receive,
            top_n=settings.voice_top_n,
        )


UNCAPPED_SPEAKERS = 1 << 20
"""The selector's cap where it must not cap (``room_wide_top_n=False``): only the floor."""


class RoomControls(Protocol):
    """What the room's owner decides and the tick asks: who is muted, may music play.

    The signaling layer's room is the one owner of these facts (they exist
    before media starts); the media room keeps no copy.
    """

    @property
    def music_allowed(self) -> bool: ...

    def is_muted(self, participant_id: str) -> bool: ...


@dataclass
class StaticControls:
    """``RoomControls`` held in memory: for a media room used without signaling (tests)."""

    muted: set[str] = field(default_factory=set)
    music_allowed: bool = True

    def is_muted(self, participant_id: str) -> bool:
        return participant_id in self.muted


class MediaPeer(Protocol):
    """One participant's connection as the room sees it (``sfu.peer.Peer`` in production)."""

    @property
    def participant_id(self) -> str: ...

    @property
    def voice(self) -> VoiceSource: ...

    @property
    def music(self) -> Mapping[str, FrameSource]: ...

    @property
    def listening(self) -> bool: ...

    def send(self, payload: bytes) -> None: ...

    def skip(self, frames: int) -> None: ...

    def last_heard(self) -> float | None: ...

    def take_reports(self) -> list[ReceiverReport]:
        """RTCP receiver reports about the mix sent to this peer, since the last call."""
        ...

    def take_uplink(self) -> UplinkStats | None:
        """Loss and jitter of this peer's voice as received, since the last call."""
        ...

    def fail(self) -> None: ...

    def detach(self) -> None: ...

    async def answer(self, offer_sdp: str) -> str: ...

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None: ...

    async def close(self) -> None: ...


PeerStateCallback = Callable[[MediaPeer, str], None]
PeerFactory = Callable[[str, Collection[str], PeerStateCallback], MediaPeer]
"""(participant id, music mids, on_state) -> a new peer, not yet answered."""


def aiortc_peers(config: MediaConfig) -> PeerFactory:
    """The production factory: an aiortc ``Peer`` per connection."""

    def make(pid: str, music_mids: Collection[str], on_state: PeerStateCallback) -> MediaPeer:
        return Peer(
            pid,
            stun_urls=config.stun_urls,
            public_ip=config.public_ip,
            music_mids=music_mids,
            on_state=on_state,
            fast_send=config.fast_send,
            polled_receive=config.polled_receive,
        )

    return make


@dataclass
class TickResult:
    """What one tick did, besides the payloads and events it handed out."""

    encodes: int = 0
    expired: list[MediaPeer] = field(default_factory=list)
    """Peers found silent for too long: reported failed; the shell drops them."""
    sends: list[tuple[bytes, list[MediaPeer]]] = field(default_factory=list)
    """Each encoded mix and the listeners it goes to (``plan``; ``tick`` has sent them)."""

    def deliver(self, start: int = 0, stop: int | None = None) -> int:
        """Send the mixes to listeners ``start..stop`` (in the order of ``sends``);
        returns how many listeners there are in all."""
        first = 0  # index of this mix's first listener among all
        for payload, listeners in self.sends:
            end = first + len(listeners)
            lo, hi = max(start, first), end if stop is None else min(stop, end)
            for peer in listeners[lo - first:hi - first]:
                peer.send(payload)
            first = end
        return first


class MediaRoom:
    """Mixes a room's voices and music for each listener, 50 times a second."""

    def __init__(
        self,
        room_id: str,
        config: MediaConfig,
        on_event: Callable[[dict[str, Any]], None],
        *,
        controls: RoomControls | None = None,
        peer_factory: PeerFactory | None = None,
        player: MusicPlayer | None = None,
    ) -> None:
        self.room_id = room_id
        self.config = config
        self._on_event = on_event
        self._controls: RoomControls = controls if controls is not None else StaticControls()
        self._make_peer = peer_factory if peer_factory is not None else aiortc_peers(config)
        self._peers: dict[str, MediaPeer] = {}
        self._sources: dict[str, FrameSource] = {}
        """Speakers without a peer here (voice piped from another node): heard, never listening."""
        self.voice_tap: Callable[[Mapping[str, Pcm]], None] | None = None
        """Given each tick the frames of this room's own unmuted peers (to pipe them on)."""
        self._plan = MixPlan()
        self._detector = SpeakingDetector()
        self._selector = SpeakerSelector(
            top_n=config.top_n + 1 if config.room_wide_top_n else UNCAPPED_SPEAKERS)
        """Decodes N + 1: each listener hears the N loudest but themselves."""
        self._decoded_level: dict[str, float] = {}
        """Last decoded level of each sender that sends no RFC 6464 level."""
        self._ducker = Ducker(duck_db=config.duck_db)
        self._player = player if player is not None else MusicPlayer()
        self._music_allowed = self._controls.music_allowed
        """The controls' answer at the last tick: a change is broadcast once."""
        self._loss = LossReports()
        self._encoders = MixEncoders(config.bitrate_bps, self._loss)
        self._down: dict[str, ReceiverReport] = {}
        """Each participant's last receiver report (jitter, RTT)."""
        self._quality: dict[str, QualityTracker] = {}
        self._task: asyncio.Task[None] | None = None
        self._drops: set[asyncio.Task[None]] = set()
        self._closed = False
        self._ticks = 0
        self.last_encodes = 0

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        metrics.ROOMS.inc()
        self._task = asyncio.create_task(self._run(), name=f"mix:{self.room_id}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
            metrics.ROOMS.dec()
        peers, self._peers = list(self._peers.values()), {}
        for peer in peers:
            self._forget_link(peer.participant_id)
        metrics.PARTICIPANTS.dec(len(peers))
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        self._player.close()

    # --- participants --------------------------------------------------------

    async def connect(
        self, participant_id: str, offer_sdp: str, music_mids: Collection[str] = ()
    ) -> str:
        """Answer a participant's offer; a second call replaces their connection."""
        if self._closed:
            raise BadRequest("room is closed")
        peer = self._make_peer(participant_id, music_mids, self._peer_state)
        try:
            answer = await peer.answer(offer_sdp)
        except BaseException:
            await peer.close()
            raise
        old = self._peers.get(participant_id)
        self._peers[participant_id] = peer
        if old is not None:
            await old.close()  # detached first: its "closed" must not remove the new one
            self._encoders.forget(participant_id)
        else:
            metrics.PARTICIPANTS.inc()
        if peer.music:
            self._emit(self._music_state())
        logger.info(
            "room %s: %s connected (%s)", self.room_id, participant_id, "rejoin" if old else "new"
        )
        return answer

    async def add_candidate(self, participant_id: str, candidate: dict[str, Any] | None) -> None:
        peer = self._peers.get(participant_id)
        if peer is None:
            raise BadCandidate("candidate before offer: send an offer first")
        await peer.add_candidate(candidate)

    async def disconnect(self, participant_id: str) -> None:
        """Remove a participant from the room (idempotent)."""
        peer = self._peers.pop(participant_id, None)
        self._plan.forget(participant_id)
        self._encoders.forget(participant_id)
        self._forget_link(participant_id)
        self._selector.forget([participant_id])
        self._decoded_level.pop(participant_id, None)
        for event in self._detector.forget([participant_id]):
            self._emit(event)
        if peer is not None:
            metrics.PARTICIPANTS.dec()
            had_music = bool(peer.music)
            await peer.close()
            if had_music:
                self._emit(self._music_state())

    def add_source(self, speaker_id: str, source: FrameSource) -> None:
        """Mix ``source`` as speaker ``speaker_id`` (by the plan, like any speaker) from the
        next tick; it listens to nothing. Replaces an earlier source of that id."""
        if speaker_id in self._peers:
            raise BadRequest(f"{speaker_id} is a participant of this room, not a source")
        self._sources[speaker_id] = source

    def remove_source(self, speaker_id: str) -> None:
        """Stop mixing a source (idempotent); the plan's rows for it stay with their owner."""
        if self._sources.pop(speaker_id, None) is not None:
            for event in self._detector.forget([speaker_id]):
                self._emit(event)

    def sources(self) -> list[str]:
        return list(self._sources)

    def speaking(self) -> set[str]:
        """Who is speaking now (what the last speaking events said), for late joiners."""
        return self._detector.reported()

    def participant_ids(self) -> list[str]:
        return list(self._peers)

    def _peer_state(self, peer: MediaPeer, state: str) -> None:
        if self._peers.get(peer.participant_id) is not peer:
            return
        if state in ("connected", "failed", "closed"):
            if state == "failed":
                metrics.PEER_FAILURES.inc()
            self._emit(
                {"type": "peer_state", "participant_id": peer.participant_id, "state": state}
            )
        if state in ("failed", "closed"):
            # Drop this very peer object: a re-offer may already have replaced it.
            self._spawn_drop(peer)

    def _expire_silent_peers(self, now: float) -> list[MediaPeer]:
        """Report peers whose inbound audio stopped (no goodbye, no ICE failure yet).

        aioice only notices a vanished peer after ~30 s of failed consent
        checks; a WebRTC client sends audio packets continuously (silence
        included), so ``peer_timeout_s`` of nothing means it is gone.
        """
        timeout = self.config.peer_timeout_s
        expired: list[MediaPeer] = []
        for pid, peer in self._peers.items():
            heard = peer.last_heard()
            if heard is None or now - heard <= timeout:
                continue
            logger.info("room %s: %s silent for %.1f s, dropping", self.room_id, pid, now - heard)
            metrics.PEER_FAILURES.inc()
            peer.fail()
            self._emit({"type": "peer_state", "participant_id": pid, "state": "failed"})
            expired.append(peer)
        return expired

    def _spawn_drop(self, peer: MediaPeer) -> None:
        task = asyncio.get_running_loop().create_task(self._drop(peer.participant_id, peer))
        self._drops.add(task)
        task.add_done_callback(self._drops.discard)

    async def _drop(self, pid: str, peer: MediaPeer) -> None:
        if self._peers.get(pid) is peer:
            await self.disconnect(pid)

    # --- who hears whom -------------------------------------------------------

    def set_volume(self, listener_id: str, speaker_id: str, gain: float) -> None:
        if isinstance(gain, bool) or not isinstance(gain, (int, float)):
            raise BadVolume("gain must be a number")
        if listener_id == speaker_id:
            raise BadVolume("a listener never hears their own voice")
        try:
            self._plan.set_volume(listener_id, speaker_id, float(gain))
        except ValueError as exc:
            raise BadVolume(str(exc)) from None

    def set_audibility(self, audible: Mapping[str, Mapping[str, float]] | None) -> None:
        """Who hears whom (None: everyone hears everyone); applies from the next tick.

        A listener without a row hears nobody.
        """
        self._plan.set_audible(None if audible is None else _checked_rows(audible))

    def set_mutual(
        self, pid: str, row: Mapping[str, float] | None, lost: Collection[str] = ()
    ) -> None:
        """``pid`` hears ``row`` and each of them hears ``pid`` at the same gain; ``lost``
        and ``pid`` no longer hear each other; ``row`` None: ``pid`` left (its row goes).
        """
        checked = None if row is None else _checked_rows({pid: row})[pid]
        self._plan.set_mutual(pid, checked, lost)

    def audibility(self) -> dict[str, dict[str, float]] | None:
        """A copy of the current rows (None: a group room)."""
        return self._plan.audibility()

    # --- music ---------------------------------------------------------------

    async def music(self, action: str, by: str, source: str | None = None) -> dict[str, Any]:
        if action not in ACTIONS:
            raise BadMusicRequest(f"unknown music action: {action!r}")
        track = None
        if action in ("play", "queue", "resume") and not self._controls.music_allowed:
            raise MusicNotAllowed("music is not included in this group's plan")
        if action in ("play", "queue"):
            if not source:
                raise BadMusicRequest(f"music {action} needs a source")
            cfg = self.config
            path = resolve_source(source, cfg.music_dir, cfg.upload_dir, cfg.max_upload_bytes)
            await asyncio.to_thread(probe_audio, path)
            if not self._controls.music_allowed:  # lost while probing
                raise MusicNotAllowed("music is not included in this group's plan")
            track = Track(source=source, by=by, path=path)
        self._player.apply(action, track)
        self._flush_music_state()
        return self._music_state()

    def music_state(self) -> dict[str, Any]:
        return self._music_state()

    def _music_state(self) -> dict[str, Any]:
        state = self._player.queue.state()
        state["allowed"] = self._controls.music_allowed
        state["client_music"] = sorted(pid for pid, p in self._peers.items() if p.music)
        return state

    def _flush_music_state(self) -> None:
        if self._player.take_changed():
            self._emit(self._music_state())

    def _follow_music_allowed(self) -> None:
        """Stop music the controls no longer allow; broadcast a change of the answer."""
        allowed = self._controls.music_allowed
        if not allowed and self._player.queue.current is not None:
            self._player.apply("stop")  # fades out; take_changed reports it
        if allowed != self._music_allowed:
            self._music_allowed = allowed
            self._player.take_changed()
            self._emit(self._music_state())

    # --- the clock ------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while True:
            n += 1
            due = start + n * FRAME_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                behind = int(-delay / FRAME_S)
                if behind >= 1:
                    metrics.LATE_TICKS.inc()
                if behind > MAX_CATCHUP_TICKS:
                    metrics.SKIPPED_TICKS.inc(behind)
                    n += behind
                    for peer in self._peers.values():
                        peer.skip(behind)
                await asyncio.sleep(0)  # let senders run even when behind
            metrics.CLOCK_LAG_SECONDS.observe(max(0.0, loop.time() - due))
            t0 = time.perf_counter()
            try:
                read_sockets()  # what arrived since the last tick, with its arrival times
            except Exception:
                logger.exception("room %s: reading the peers' sockets failed", self.room_id)
            try:
                result = self.plan(loop.time())
            except Exception:
                logger.exception("room %s: tick failed", self.room_id)
                continue
            for peer in result.expired:
                self._spawn_drop(peer)
            metrics.TICK_SECONDS.observe(time.perf_counter() - t0)
            await self._deliver(result)
            if self.config.fast_send:
                # packets leave in the tick (sfu.outbound): the last listener's waited it all
                metrics.SEND_WAIT_SECONDS.observe(time.perf_counter() - t0)

    async def _deliver(self, result: TickResult) -> None:
        """Hand out one tick's packets, yielding to the loop between chunks of listeners."""
        start = 0
        while True:
            stop = start + SEND_CHUNK_LISTENERS
            try:
                total = result.deliver(start, stop)
            except Exception:
                logger.exception("room %s: sending failed", self.room_id)
                return
            if stop >= total:
                return
            start = stop
            await asyncio.sleep(0)

    def tick(self, now: float) -> TickResult:
        """One 20 ms step at ``now``: pull frames, detect speech, mix, encode, hand out.

        Never awaits and reads no clock but ``now``: the caller (a test with a
        fake clock) drops the peers it returns as expired. ``_run`` plans and
        hands out in chunks (``SEND_CHUNK_LISTENERS``).
        """
        result = self.plan(now)
        result.deliver()
        return result

    def plan(self, now: float) -> TickResult:
        """``tick`` up to the sending: the encoded mixes and their listeners in ``sends``."""
        self._ticks += 1
        peers = self._peers
        controls = self._controls
        muted = {pid for pid in peers if controls.is_muted(pid)}
        self._follow_music_allowed()
        voice: dict[str, Pcm] = {}
        music_frames: list[Pcm] = []
        timed = self._ticks % JITTER_WAIT_SAMPLE_EVERY_TICKS == 0
        # Whom to decode: the loudest few by the level each sender puts in its packets
        # (RFC 6464, sfu.speakers); a sender that sends none is always decoded and
        # ranked by its last decoded level. The others' turn passes undecoded; their
        # sender level still drives the speaking events and the music's ducking.
        sender_levels: dict[str, float] = {}
        must_decode: set[str] = set()
        for pid, peer in peers.items():
            if pid in muted:
                continue
            level = peer.voice.take_level(now)
            if level is None:
                must_decode.add(pid)
                level = self._decoded_level.get(pid, MIN_DBOV)
            sender_levels[pid] = level
        selected = self._selector.update(now, sender_levels)
        levels: dict[str, float] = {}
        for pid, peer in peers.items():
            if pid in selected or pid in must_decode:
                frame = peer.voice.pop(now)
                if frame is not None and pid not in muted:
                    voice[pid] = frame
                    if timed and peer.voice.ready_at is not None:
                        metrics.JITTER_WAIT_SECONDS.observe(now - peer.voice.ready_at)
            else:
                peer.voice.skip(now)
                level = sender_levels.get(pid, MIN_DBOV)
                if level > MIN_DBOV:  # the detector takes the missing as silent
                    levels[pid] = level
            for slot in peer.music.values():
                m = slot.pop(now)
                if m is not None:
                    music_frames.append(m)
        if self.voice_tap is not None and voice:
            try:
                self.voice_tap(voice)
            except Exception:
                logger.exception("room %s: voice tap failed", self.room_id)
        for sid, source in self._sources.items():
            frame = source.pop(now)
            if frame is not None:
                voice[sid] = frame
        if voice:
            ids = list(voice)
            decoded = levels_dbov(np.stack([voice[i] for i in ids])).tolist()
            for pid, level in zip(ids, decoded, strict=True):
                levels[pid] = level
                if pid in must_decode:
                    self._decoded_level[pid] = level
            metrics.PACKETS_IN.inc(len(voice))
        events = self._detector.update(now, levels)
        # Who is in the mixes follows the speaking gate, not this tick's frame:
        # a talker whose frame is a few ms late contributes silence for one
        # tick but keeps their place, so recipes (and the encoder each listener
        # is fed by) do not churn with network jitter.
        sources = self._sources
        speaking = [pid for pid in self._detector.active()
                    if (pid in peers and pid not in muted) or pid in sources]
        # A sender without RFC 6464 levels is ranked by its last decoded frame, so at
        # a word's onset it is not selected yet: it was decoded, and it is mixed.
        active = [pid for pid in speaking
                  if pid in selected or pid in must_decode or pid in sources]

        server_music = self._player.next_frame()
        if server_music is not None:
            music_frames.append(server_music)
        bed: Acc | None = None
        if music_frames:
            acc = np.zeros_like(music_frames[0], dtype=np.int32)
            for m in music_frames:
                acc += m
            bed = self._ducker.apply(acc, anyone_speaking=bool(speaking))
        else:
            self._ducker.gains(bool(speaking))  # keep the ramp moving between songs

        listeners = [pid for pid, p in peers.items() if p.listening]
        recipes = limit_recipes(self._plan.recipes(listeners, active),
                                self._selector.ranked(), self.config.top_n)
        mixes, groups = mix(recipes, voice, bed)
        payloads, encodes = self._encoders.encode(mixes, groups, now)
        sends = [(payloads[recipe], [peers[listener] for listener in groups[recipe]])
                 for recipe in mixes]
        self.last_encodes = encodes
        metrics.ENCODES.inc(encodes)
        metrics.ENCODES_PER_TICK.observe(encodes)
        metrics.PACKETS_OUT.inc(len(listeners))

        for event in events:
            self._emit(event)
        self._flush_music_state()
        if self._ticks % LINKS_EVERY_TICKS == 0:
            self._follow_links(now)
        expired = []
        if self._ticks % LIVENESS_EVERY_TICKS == 0:
            expired = self._expire_silent_peers(now)
        return TickResult(encodes=encodes, expired=expired, sends=sends)

    def encoder_settings(self, listener: str) -> tuple[bool, int, int] | None:
        """(FEC on, expected loss %, bitrate) of the encoder feeding ``listener`` now."""
        return self._encoders.settings(listener)

    # --- links: RTCP loss -> FEC, and quality -------------------------------------

    def _follow_links(self, now: float) -> None:
        """Once a second: each peer's receiver reports and uplink stats -> the shared
        encoders' FEC (worst listener), /metrics, and a ``quality`` event on a change."""
        room = self.room_id
        for pid, peer in self._peers.items():
            for report in peer.take_reports():
                self._loss.report(pid, report.fraction_lost, now)
                self._down[pid] = report
            up = peer.take_uplink()
            down = self._down.get(pid)
            down_loss = self._loss.loss(pid, now)
            down_jitter_ms = down.jitter_s * 1000.0 if down is not None else 0.0
            rtt_ms = down.rtt_s * 1000.0 if down is not None and down.rtt_s is not None else 0.0
            up_loss = up.lost_perc if up is not None else 0.0
            up_jitter_ms = up.jitter_ms if up is not None else 0.0
            metrics.LINK_LOSS_PERCENT.labels(room, pid, "up").set(up_loss)
            metrics.LINK_LOSS_PERCENT.labels(room, pid, "down").set(down_loss)
            metrics.LINK_JITTER_SECONDS.labels(room, pid, "up").set(up_jitter_ms / 1000.0)
            metrics.LINK_JITTER_SECONDS.labels(room, pid, "down").set(down_jitter_ms / 1000.0)
            metrics.LINK_RTT_SECONDS.labels(room, pid).set(rtt_ms / 1000.0)
            settings = self.encoder_settings(pid)
            loss = max(up_loss, down_loss)
            jitter_ms = max(up_jitter_ms, down_jitter_ms)
            tracker = self._quality.setdefault(pid, QualityTracker())
            changed = tracker.update(loss, jitter_ms, rtt_ms,
                                     fec=settings is not None and settings[0])
            if changed is not None:
                self._emit({"type": "quality", "participant_id": pid, "quality": str(changed),
                            "loss_percent": round(loss, 1), "jitter_ms": round(jitter_ms, 1),
                            "rtt_ms": round(rtt_ms, 1)})
        metrics.ENCODER_FEC.labels(room).set(self._encoders.retune(now))

    def _forget_link(self, pid: str) -> None:
        self._loss.forget(pid)
        self._down.pop(pid, None)
        self._quality.pop(pid, None)
        for gauge, labels in ((metrics.LINK_LOSS_PERCENT, ("up", "down")),
                              (metrics.LINK_JITTER_SECONDS, ("up", "down"))):
            for direction in labels:
                with contextlib.suppress(KeyError):
                    gauge.remove(self.room_id, pid, direction)
        with contextlib.suppress(KeyError):
            metrics.LINK_RTT_SECONDS.remove(self.room_id, pid)

    def _emit(self, event: dict[str, Any]) -> None:
        try:
            self._on_event(event)
        except Exception:
            logger.exception("room %s: on_event failed for %s", self.room_id, event.get("type"))


def _checked_rows(rows: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Audibility rows copied, gains checked (0..MAX_GAIN), zero gains left out."""
    copy: dict[str, dict[str, float]] = {}
    for listener, speakers in rows.items():
        row: dict[str, float] = {}
        for speaker, gain in speakers.items():
            g = float(gain)
            if not math.isfinite(g) or not 0.0 <= g <= MAX_GAIN:
                raise BadVolume(f"audibility gain must be within 0..{MAX_GAIN}")
            if g > 0.0:
                row[speaker] = g
        copy[listener] = row
    return copy
