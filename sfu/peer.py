"""One participant's aiortc peer connection (aiortc's camelCase stays in here).

Inbound: aiortc decodes each audio track in its own thread; a reader task per
track turns frames into mono 48 kHz int16 and pushes them into a small
``JitterSlot`` that the room's clock pops once per tick. Voice goes to the
voice slot; tracks whose mid the client marked as music go to music slots.

aiortc's audio ``JitterBuffer`` waits for four later packets before releasing a
frame (80 ms) and stalls on a lost packet until 16 more arrive. An Opus RTP
packet is a whole frame, so ``_PassThroughBuffer`` hands each packet to the
decoder as it arrives (dropping late duplicates); the jitter allowance is the
slot's instead: up to ``SLOT_MAX_FRAMES`` frames, older ones dropped.

Outbound: a ``MixTrack`` on the first non-music audio transceiver.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Collection
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame

from sfu import metrics
from sfu.errors import BadCandidate, BadOffer
from sfu.ice import announce_public_ip, rtc_configuration
from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ, Pcm
from sfu.tracks import MixTrack

logger = logging.getLogger(__name__)

SLOT_MAX_FRAMES = 3
"""Jitter allowance per inbound track: 60 ms; beyond it the oldest frame goes."""
MAX_SDP_CHARS = 64 * 1024
SEQ_HALF = 1 << 15


class JitterSlot:
    """Decoded samples waiting for the next tick; re-chunks any packet size to 20 ms.

    Depth adapts down: a burst (a stalled loop, a network hiccup) can leave
    two or three frames queued, and since frames then arrive and leave at the
    same rate that extra latency would stay forever. If the slot never ran dry
    during the last ``ADAPT_TICKS`` pops, one frame is dropped.

    Pushes may say when their samples arrived (``at``, on all pushes of a
    slot or on none); ``ready_at`` then tells when the frame ``pop`` returned
    became complete (its last sample arrived), so the room can measure how
    long frames wait for the tick.
    """

    ADAPT_TICKS = 50

    def __init__(self, max_frames: int = SLOT_MAX_FRAMES) -> None:
        self._max_samples = max_frames * FRAME_SAMPLES
        self._buffer = np.zeros(0, dtype=np.int16)
        self._arrivals: collections.deque[list[float]] = collections.deque()
        """[arrival time, how many of that push's samples are still buffered], oldest first."""
        self.ready_at: float | None = None
        self.dropped_frames = 0
        self._pops = 0
        self._min_left = max_frames

    def push(self, samples: Pcm, at: float | None = None) -> None:
        buf = np.concatenate((self._buffer, samples)) if self._buffer.size else samples
        if at is not None:
            self._arrivals.append([at, samples.shape[0]])
        excess = buf.shape[0] - self._max_samples
        if excess > 0:
            self.dropped_frames += -(-excess // FRAME_SAMPLES)
            buf = buf[excess:]
            self._consume(excess)
        self._buffer = buf

    def pop(self) -> Pcm | None:
        """One 20 ms frame, or None if none is complete (the tick uses silence)."""
        if self._buffer.shape[0] < FRAME_SAMPLES:
            self._min_left = 0
            self._pops += 1
            self.ready_at = None
            return None
        frame, self._buffer = self._buffer[:FRAME_SAMPLES], self._buffer[FRAME_SAMPLES:]
        self.ready_at = self._consume(FRAME_SAMPLES)
        self._pops += 1
        self._min_left = min(self._min_left, self._buffer.shape[0] // FRAME_SAMPLES)
        if self._pops >= self.ADAPT_TICKS:
            if self._min_left >= 1:  # a whole frame of latency never used: shed it
                self._buffer = self._buffer[FRAME_SAMPLES:]
                self._consume(FRAME_SAMPLES)
                self.dropped_frames += 1
            self._pops = 0
            self._min_left = len(self)
        return frame

    def _consume(self, samples: int) -> float | None:
        """Forget the arrival times of ``samples`` leaving; returns the last one's."""
        last = None
        arrivals = self._arrivals
        while samples > 0 and arrivals:
            entry = arrivals[0]
            last = entry[0]
            if entry[1] > samples:
                entry[1] -= samples
                break
            samples -= int(entry[1])  # a count, stored beside a time
            arrivals.popleft()
        return last

    def __len__(self) -> int:
        return self._buffer.shape[0] // FRAME_SAMPLES


class _PassThroughBuffer(JitterBuffer):
    """Releases every newer audio packet at once; the room's slot absorbs jitter.

    With an ``opus_sink``, Opus payloads are handed to it right here, on the
    event loop, instead of going through aiortc's decoder thread: that path
    costs two cross-thread queue handoffs, a stereo decode and a downmix per
    packet, more than the mono decode itself. Other codecs go aiortc's way.
    """

    def __init__(self, receiver: RTCRtpReceiver | None = None,
                 opus_sink: Callable[[bytes], None] | None = None) -> None:
        super().__init__(capacity=16)
        self._last_seq: int | None = None
        self._codecs: dict[int, Any] = getattr(receiver, "_RTCRtpReceiver__codecs", {})
        self._opus_sink = opus_sink

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last_seq is not None and (seq - self._last_seq) % 65536 >= SEQ_HALF:
            return False, None  # late or duplicate: its time has passed
        if self._last_seq is not None and seq == self._last_seq:
            return False, None
        self._last_seq = seq
        data: bytes = getattr(packet, "_data", packet.payload)
        if self._opus_sink is not None:
            codec = self._codecs.get(packet.payload_type)
            if codec is not None and codec.mimeType.lower() == "audio/opus":
                self._opus_sink(data)
                return False, None
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


def _install_pass_through(receiver: RTCRtpReceiver,
                          opus_sink: Callable[[bytes], None] | None = None) -> None:
    attr = "_RTCRtpReceiver__jitter_buffer"
    if isinstance(getattr(receiver, attr, None), JitterBuffer):
        setattr(receiver, attr, _PassThroughBuffer(receiver, opus_sink))
    else:  # pragma: no cover - a future aiortc renamed it; keep its buffer
        logger.warning("aiortc receiver has no %s; keeping its 80 ms jitter buffer", attr)


class MonoOpusDecoder:
    """Opus payloads straight to 48 kHz mono int16 (libopus downmixes stereo streams)."""

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.format = "s16"  # type: ignore[attr-defined]
        self._codec.layout = "mono"  # type: ignore[attr-defined]
        self._codec.sample_rate = SAMPLE_RATE_HZ  # type: ignore[attr-defined]

    def decode(self, payload: bytes) -> list[Pcm]:
        frames = self._codec.decode(av.Packet(payload))
        return [np.asarray(f.to_ndarray(), dtype=np.int16).reshape(-1)  # type: ignore[union-attr,misc]
                for f in frames]


def to_mono(frame: AudioFrame) -> Pcm:
    """A decoded frame as mono int16 at 48 kHz (aiortc decodes Opus to s16 stereo)."""
    arr = frame.to_ndarray()
    if frame.format.name != "s16" or frame.sample_rate != SAMPLE_RATE_HZ:
        raise ValueError(f"unexpected decoded audio {frame.format.name}@{frame.sample_rate}")
    channels = len(frame.layout.channels)
    if channels == 1:
        return arr.reshape(-1).astype(np.int16, copy=False)
    inter = arr.reshape(-1, channels)
    if channels == 2:
        # (L + R) >> 1, element-wise: half the cost of a numpy reduction over
        # an axis of length 2, 50 times a second per participant.
        mono = np.add(inter[:, 0], inter[:, 1], dtype=np.int32)
        mono >>= 1
        return mono.astype(np.int16)
    return (inter.astype(np.int32).sum(axis=1) // channels).astype(np.int16)


def check_offer_text(sdp: Any) -> None:
    """Cheap checks before aiortc parses anything: is this an SDP offer with audio?"""
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadOffer("offer must be SDP text")
    if len(sdp) > MAX_SDP_CHARS:
        raise BadOffer("offer SDP is too long")
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if not lines or lines[0] != "v=0" or not any(line.startswith("m=") for line in lines):
        raise BadOffer("offer is not SDP (expected 'v=0' and media lines)")
    if not any(line.startswith("m=audio ") for line in lines):
        raise BadOffer("offer has no audio")


class Peer:
    """A participant's peer connection: mix out, voice (and music) in."""

    def __init__(
        self,
        participant_id: str,
        *,
        stun_urls: Collection[str] = (),
        public_ip: str | None = None,
        music_mids: Collection[str] = (),
        on_state: Callable[[Peer, str], None],
    ) -> None:
        self.participant_id = participant_id
        self.out = MixTrack()
        self.voice = JitterSlot()
        self.music: dict[str, JitterSlot] = {}
        self.has_voice_in = False
        self.state = "new"
        self.last_frame_at: float | None = None
        self.frames_in = 0
        self._public_ip = public_ip
        self._music_mids = frozenset(music_mids)
        self._on_state: Callable[[Peer, str], None] | None = on_state
        self._readers: list[asyncio.Task[None]] = []
        self._pc = RTCPeerConnection(rtc_configuration(tuple(stun_urls)))
        self._pc.on("connectionstatechange", self._state_changed)

    def detach(self) -> None:
        """Stop reporting state (the peer is being replaced or removed on purpose)."""
        self._on_state = None

    def _state_changed(self) -> None:
        state = self._pc.connectionState
        if state == "connected" and self.last_frame_at is None:
            self.last_frame_at = asyncio.get_running_loop().time()
        self.state = state
        if self._on_state is not None:
            self._on_state(self, state)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer; returns the answer SDP with all our candidates."""
        check_offer_text(offer_sdp)
        pc = self._pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc raises a zoo of types on bad SDP
            logger.debug("rejected offer from %s: %r", self.participant_id, exc)
            raise BadOffer(f"offer rejected: {exc or type(exc).__name__}") from None
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        voice = [t for t in audio if t.mid not in self._music_mids]
        if not voice:
            raise BadOffer("offer has no voice audio (every audio m-line is marked music)")
        for t in pc.getTransceivers():
            if t.kind != "audio":
                t.direction = "inactive"
                continue
            if t is voice[0]:
                t.sender.replaceTrack(self.out)
                t.direction = "sendrecv"
            else:
                t.direction = "recvonly"
            track = t.receiver.track
            if track is None or t._offerDirection not in ("recvonly", "sendrecv"):
                _install_pass_through(t.receiver)
                continue  # the client sends nothing on this m-line
            if t.mid in self._music_mids:
                slot = self.music.setdefault(str(t.mid), JitterSlot())
            else:
                if t is not voice[0]:
                    _install_pass_through(t.receiver)
                    continue  # a second voice track: only the first is mixed
                slot = self.voice
                self.has_voice_in = True
            _install_pass_through(t.receiver, self._opus_sink(slot))
            self._readers.append(asyncio.create_task(self._read(track, slot)))
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            logger.debug("cannot answer %s: %r", self.participant_id, exc)
            raise BadOffer(f"cannot answer this offer: {exc or type(exc).__name__}") from None
        return announce_public_ip(pc.localDescription.sdp, self._public_ip)

    def _opus_sink(self, slot: JitterSlot) -> Callable[[bytes], None]:
        """Decode one Opus payload into ``slot`` (called by the receiver, on the loop)."""
        decoder = MonoOpusDecoder()
        loop = asyncio.get_running_loop()

        def sink(payload: bytes) -> None:
            try:
                frames = decoder.decode(payload)
            except (av.FFmpegError, ValueError) as exc:
                logger.debug("%s: undecodable Opus packet: %s", self.participant_id, exc)
                return
            now = loop.time()
            for pcm in frames:
                slot.push(pcm, now)
                self.frames_in += 1
            if frames:
                self.last_frame_at = now

        return sink

    async def _read(self, track: MediaStreamTrack, slot: JitterSlot) -> None:
        loop = asyncio.get_running_loop()
        debug = logger.isEnabledFor(logging.DEBUG)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, AudioFrame):
                continue
            try:
                pcm = to_mono(frame)
            except ValueError as exc:
                if debug:
                    logger.debug("%s: %s", self.participant_id, exc)
                continue
            self.last_frame_at = loop.time()
            slot.push(pcm, self.last_frame_at)
            self.frames_in += 1

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        """Add a trickled remote candidate; None (or an empty one) ends them."""
        pc = self._pc
        if candidate is None or not candidate.get("candidate"):
            # aiortc ends remote gathering with a None candidate per transport.
            await pc.addIceCandidate(None)
            return
        text = candidate.get("candidate")
        if not isinstance(text, str) or len(text) > 1024:
            raise BadCandidate("candidate must be a string")
        try:
            parsed = candidate_from_sdp(text.removeprefix("a=").removeprefix("candidate:"))
        except (AssertionError, ValueError, IndexError) as exc:
            raise BadCandidate(f"malformed candidate: {text[:80]!r}") from exc
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            raise BadCandidate("candidate needs sdpMid or sdpMLineIndex")
        try:
            await pc.addIceCandidate(parsed)
        except Exception as exc:
            raise BadCandidate(f"candidate rejected: {exc or type(exc).__name__}") from None

    def take_voice(self) -> Pcm | None:
        return self.voice.pop()

    async def close(self) -> None:
        self.detach()
        self.out.stop()
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._readers.clear()
        dropped = self.voice.dropped_frames + sum(s.dropped_frames for s in self.music.values())
        if dropped:
            metrics.FRAMES_DROPPED.inc(dropped)
        await self._pc.close()
