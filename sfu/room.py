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
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import BadRequest
from sfu import metrics
from sfu.codec import OpusEncoder
from sfu.ducking import Ducker
from sfu.errors import BadCandidate, BadMusicRequest, BadVolume, MusicNotAllowed
from sfu.ice import use_host_addresses
from sfu.levels import SpeakingDetector, levels_dbov
from sfu.mixer import FRAME_MS, MAX_GAIN, Acc, MixPlan, Pcm, assign_encoders, mix
from sfu.music import ACTIONS, MusicPlayer, Track, probe_audio, resolve_source
from sfu.peer import Peer

if TYPE_CHECKING:
    from common.settings import Settings

logger = logging.getLogger(__name__)

FRAME_S = FRAME_MS / 1000
MAX_CATCHUP_TICKS = 5
LIVENESS_EVERY_TICKS = 25
"""Check for silent peers twice a second."""
JITTER_WAIT_SAMPLE_EVERY_TICKS = 5
"""Time the inbound frames of every 5th tick (``disco_sfu_jitter_wait_seconds``)."""


@dataclass(frozen=True)
class MediaConfig:
    """What a room needs from the settings (see ``from_settings``)."""

    host_addresses: tuple[str, ...] = ()
    """ICE host candidates offered; () = aioice's default (all but loopback)."""
    public_ip: str | None = None
    stun_urls: tuple[str, ...] = ()
    duck_db: float = -12.0
    bitrate_bps: int = 32_000
    music_dir: Path | None = None
    upload_dir: Path | None = None
    max_upload_bytes: int = 50 * 1024 * 1024
    peer_timeout_s: float = 5.0
    """A peer whose inbound audio stops this long is reported failed and removed."""

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaConfig:
        return cls(
            host_addresses=tuple(settings.rtc_host_addresses),
            public_ip=settings.rtc_public_ip,
            stun_urls=tuple(settings.stun_urls),
            duck_db=settings.music_duck_db,
            bitrate_bps=settings.opus_bitrate_bps,
            music_dir=settings.music_dir,
            upload_dir=settings.upload_dir,
            max_upload_bytes=settings.max_upload_bytes,
        )


class MediaRoom:
    """Mixes a room's voices and music for each listener, 50 times a second."""

    def __init__(
        self, room_id: str, config: MediaConfig, on_event: Callable[[dict[str, Any]], None]
    ) -> None:
        self.room_id = room_id
        self.config = config
        self._on_event = on_event
        self._peers: dict[str, Peer] = {}
        self._muted: set[str] = set()
        self._plan = MixPlan()
        self._detector = SpeakingDetector()
        self._ducker = Ducker(duck_db=config.duck_db)
        self._player = MusicPlayer()
        self._encoders: dict[int, OpusEncoder] = {}
        self._listener_encoder: dict[str, int] = {}
        self._fresh_ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._ticks = 0
        self.last_encodes = 0

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        if self.config.host_addresses:
            use_host_addresses(self.config.host_addresses)
        metrics.ROOMS.inc()
        self._task = asyncio.create_task(self._run(), name=f"mix:{self.room_id}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            metrics.ROOMS.dec()
        peers, self._peers = list(self._peers.values()), {}
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
        peer = Peer(
            participant_id,
            stun_urls=self.config.stun_urls,
            public_ip=self.config.public_ip,
            music_mids=music_mids,
            on_state=self._peer_state,
        )
        try:
            answer = await peer.answer(offer_sdp)
        except BaseException:
            await peer.close()
            raise
        old = self._peers.get(participant_id)
        self._peers[participant_id] = peer
        if old is not None:
            await old.close()  # detached first: its "closed" must not remove the new one
            self._listener_encoder.pop(participant_id, None)
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
        self._muted.discard(participant_id)
        self._plan.forget(participant_id)
        self._listener_encoder.pop(participant_id, None)
        for event in self._detector.forget([participant_id]):
            self._emit(event)
        if peer is not None:
            metrics.PARTICIPANTS.dec()
            had_music = bool(peer.music)
            await peer.close()
            if had_music:
                self._emit(self._music_state())

    def speaking(self) -> set[str]:
        """Who is speaking now (what the last speaking events said), for late joiners."""
        return self._detector.reported()

    def participant_ids(self) -> list[str]:
        return list(self._peers)

    def _peer_state(self, peer: Peer, state: str) -> None:
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
            asyncio.get_running_loop().create_task(self._drop(peer.participant_id, peer))

    def _expire_silent_peers(self, now: float) -> None:
        """Report peers whose inbound audio stopped (no goodbye, no ICE failure yet).

        aioice only notices a vanished peer after ~30 s of failed consent
        checks; a WebRTC client sends audio packets continuously (silence
        included), so ``peer_timeout_s`` of nothing means it is gone.
        """
        timeout = self.config.peer_timeout_s
        for pid, peer in list(self._peers.items()):
            if not peer.has_voice_in or peer.last_frame_at is None or peer.state != "connected":
                continue
            if now - peer.last_frame_at > timeout:
                logger.info(
                    "room %s: %s silent for %.1f s, dropping",
                    self.room_id,
                    pid,
                    now - peer.last_frame_at,
                )
                metrics.PEER_FAILURES.inc()
                peer.detach()
                peer.state = "failed"
                self._emit({"type": "peer_state", "participant_id": pid, "state": "failed"})
                asyncio.get_running_loop().create_task(self._drop(pid, peer))

    async def _drop(self, pid: str, peer: Peer) -> None:
        if self._peers.get(pid) is peer:
            await self.disconnect(pid)

    # --- who hears whom -------------------------------------------------------

    def set_muted(self, participant_id: str, muted: bool) -> None:
        if muted:
            self._muted.add(participant_id)
        else:
            self._muted.discard(participant_id)

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
        self._plan.audible = None if audible is None else _checked_rows(audible)

    def set_mutual(
        self, pid: str, row: Mapping[str, float] | None, lost: Collection[str] = ()
    ) -> None:
        """``pid`` hears ``row`` and each of them hears ``pid`` at the same gain; ``lost``
        and ``pid`` no longer hear each other; ``row`` None: ``pid`` left (its row goes).

        A nearby room's pairs are mutual, so one person's move changes exactly
        these entries: O(their neighbours), not O(room).
        """
        checked = None if row is None else _checked_rows({pid: row})[pid]
        if self._plan.audible is None:
            self._plan.audible = {}
        audible = self._plan.audible
        for other in lost:
            audible.get(other, {}).pop(pid, None)
        if checked is None:
            audible.pop(pid, None)
            return
        audible[pid] = checked
        for other, gain in checked.items():
            audible.setdefault(other, {})[pid] = gain

    def audibility(self) -> dict[str, dict[str, float]] | None:
        """A copy of the current rows (None: a group room)."""
        audible = self._plan.audible
        return None if audible is None else {k: dict(v) for k, v in audible.items()}

    # --- music ---------------------------------------------------------------

    async def music(self, action: str, by: str, source: str | None = None) -> dict[str, Any]:
        if action not in ACTIONS:
            raise BadMusicRequest(f"unknown music action: {action!r}")
        track = None
        if action in ("play", "queue", "resume") and not self._player.queue.allowed:
            raise MusicNotAllowed("music is not included in this group's plan")
        if action in ("play", "queue"):
            if not source:
                raise BadMusicRequest(f"music {action} needs a source")
            cfg = self.config
            path = resolve_source(source, cfg.music_dir, cfg.upload_dir, cfg.max_upload_bytes)
            await asyncio.to_thread(probe_audio, path)
            if not self._player.queue.allowed:  # lost while probing
                raise MusicNotAllowed("music is not included in this group's plan")
            track = Track(source=source, by=by, path=path)
        self._player.apply(action, track)
        self._flush_music_state()
        return self._music_state()

    def set_music_allowed(self, allowed: bool) -> None:
        self._player.set_allowed(allowed)
        self._flush_music_state()

    def music_state(self) -> dict[str, Any]:
        return self._music_state()

    def _music_state(self) -> dict[str, Any]:
        state = self._player.queue.state()
        state["client_music"] = sorted(pid for pid, p in self._peers.items() if p.music)
        return state

    def _flush_music_state(self) -> None:
        if self._player.changed:
            self._player.changed = False
            self._emit(self._music_state())

    # --- the clock ------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while True:
            n += 1
            delay = start + n * FRAME_S - loop.time()
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
                        for _ in range(behind):
                            peer.out.skip()
                await asyncio.sleep(0)  # let senders run even when behind
            t0 = time.perf_counter()
            try:
                self.tick(loop.time())
            except Exception:
                logger.exception("room %s: tick failed", self.room_id)
            metrics.TICK_SECONDS.observe(time.perf_counter() - t0)

    def tick(self, now: float) -> None:
        """One 20 ms step: pull frames, detect speech, mix, encode, hand out."""
        self._ticks += 1
        peers = self._peers
        voice: dict[str, Pcm] = {}
        music_frames: list[Pcm] = []
        timed = self._ticks % JITTER_WAIT_SAMPLE_EVERY_TICKS == 0
        for pid, peer in peers.items():
            frame = peer.voice.pop()
            if frame is not None and pid not in self._muted:
                voice[pid] = frame
                if timed and peer.voice.ready_at is not None:
                    metrics.JITTER_WAIT_SECONDS.observe(now - peer.voice.ready_at)
            for slot in peer.music.values():
                m = slot.pop()
                if m is not None:
                    music_frames.append(m)
        if voice:
            ids = list(voice)
            levels = dict(
                zip(ids, levels_dbov(np.stack([voice[i] for i in ids])).tolist(), strict=True)
            )
            metrics.PACKETS_IN.inc(len(voice))
        else:
            levels = {}
        events = self._detector.update(now, levels)
        # Who is in the mixes follows the speaking gate, not this tick's frame:
        # a talker whose frame is a few ms late contributes silence for one
        # tick but keeps their place, so recipes (and the encoder each listener
        # is fed by) do not churn with network jitter.
        active = [pid for pid in self._detector.active() if pid in peers and pid not in self._muted]

        server_music = self._player.next_frame()
        if server_music is not None:
            music_frames.append(server_music)
        bed: Acc | None = None
        if music_frames:
            acc = np.zeros_like(music_frames[0], dtype=np.int32)
            for m in music_frames:
                acc += m
            bed = self._ducker.apply(acc, anyone_speaking=bool(active))
        else:
            self._ducker.gains(bool(active))  # keep the ramp moving between songs

        listeners = [pid for pid, p in peers.items() if p.out.readyState == "live"]
        recipes = self._plan.recipes(listeners, active)
        mixes, groups = mix(recipes, voice, bed)
        enc_ids = assign_encoders(groups, self._listener_encoder, self._fresh_ids)
        for recipe, pcm in mixes.items():
            payload = self._encoder(enc_ids[recipe]).encode(pcm)
            for listener in groups[recipe]:
                peers[listener].out.push(payload)
        self._listener_encoder = {
            listener: enc_ids[recipe] for recipe, ls in groups.items() for listener in ls
        }
        self._retire_encoders(set(enc_ids.values()))
        self.last_encodes = len(mixes)
        metrics.ENCODES.inc(len(mixes))
        metrics.ENCODES_PER_TICK.observe(len(mixes))
        metrics.PACKETS_OUT.inc(len(listeners))

        for event in events:
            self._emit(event)
        self._flush_music_state()
        if self._ticks % LIVENESS_EVERY_TICKS == 0:
            self._expire_silent_peers(now)

    def _encoder(self, enc_id: int) -> OpusEncoder:
        enc = self._encoders.get(enc_id)
        if enc is None:
            # Always a new encoder (~45 us): a recycled one would still hold
            # 6.5 ms of lookahead from another mix, which can contain the new
            # listener's own voice.
            enc = self._encoders[enc_id] = OpusEncoder(self.config.bitrate_bps)
        return enc

    def _retire_encoders(self, in_use: set[int]) -> None:
        for enc_id in [e for e in self._encoders if e not in in_use]:
            del self._encoders[enc_id]

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
