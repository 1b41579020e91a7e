"""The outbound track: a listener's mix, already Opus-encoded by the room.

``RTCRtpSender._next_encoded_frame`` awaits ``track.recv()``; when it gets an
``av.Packet`` rather than a frame, it calls the codec's ``pack()`` (payload
bytes, and pts converted to the RTP clock) and sends it. So a track whose
``recv()`` returns packets bypasses aiortc's resampler, encoder and Python
audio-level code entirely: the room encodes each distinct mix once and
``push``es the same payload into every listener's track.

Each track numbers its own packets (pts advances 960 per frame pushed), so the
RTP timestamps of one listener's stream are continuous even when the encoder
feeding it changes. A track whose sender falls behind keeps only the newest
few frames: latency stays bounded, and the pts gap tells the far end's decoder
how much time went missing.

One packet in ``SEND_WAIT_SAMPLE_EVERY`` reports how long it waited between
the room's tick and aiortc taking it (``disco_sfu_send_wait_seconds``): the
part of the server's latency that grows with the number of listeners.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sfu import metrics
from sfu.codec import make_packet
from sfu.mixer import FRAME_SAMPLES

logger = logging.getLogger(__name__)

MAX_QUEUED_FRAMES = 3
"""Frames a listener's track holds when its sender lags (60 ms)."""
SEND_WAIT_SAMPLE_EVERY = 5
"""Time every 5th packet's wait for the sender (a histogram sample costs ~2 us)."""


class MixTrack(MediaStreamTrack):
    """An audio track fed with Opus payloads by the room's clock."""

    kind = "audio"

    def __init__(self, max_queued: int = MAX_QUEUED_FRAMES) -> None:
        super().__init__()
        self._frames: collections.deque[tuple[int, bytes, float]] = collections.deque(
            maxlen=max_queued
        )
        self._wakeup = asyncio.Event()
        self._next_pts = 0
        self.dropped = 0

    def push(self, payload: bytes) -> None:
        """Queue one encoded 20 ms frame (drops the oldest when full)."""
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        self._frames.append((self._next_pts, payload, time.monotonic()))
        self._next_pts += FRAME_SAMPLES
        self._wakeup.set()

    def skip(self) -> None:
        """Advance time by one frame without sending (keeps pts tied to the clock)."""
        self._next_pts += FRAME_SAMPLES

    async def recv(self) -> av.Packet:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.readyState != "live":
            raise MediaStreamError
        pts, payload, pushed_at = self._frames.popleft()
        if pts // FRAME_SAMPLES % SEND_WAIT_SAMPLE_EVERY == 0:
            metrics.SEND_WAIT_SECONDS.observe(time.monotonic() - pushed_at)
        return make_packet(payload, pts)

    def stop(self) -> None:
        super().stop()
        self._wakeup.set()
