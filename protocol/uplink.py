"""A client's outbound voice, sent as Chrome sends it: RED (RFC 2198) once the answer accepts it.

Chrome offers ``red/48000/2`` and, when the answer keeps it, wraps every Opus
frame in RED with the one frame before it (libwebrtc's
``AudioEncoderCopyRed``, one redundant encoding unless a field trial asks
for more), from the first packet on, whatever the loss: so one lost packet
of an uplink is rebuilt bit-exact by the server from the next one. Disco's
answer accepts RED; Janus AudioBridge's does not (plain Opus then).

aiortc's ``RTCRtpSender`` sends every packet with the first negotiated codec
and cannot switch to RED. ``UplinkStream`` sends instead, through
``protocol.aiortc_compat.take_sending`` (the same hand-over the server's send
path uses: aiortc keeps ICE, DTLS and RTCP; this numbers, wraps, protects and
sends): build one with ``UplinkStream()``, call
``take_sending(sender, stream.counters, stream.start)`` before connecting
(the sender's track must never yield: ``IdleTrack``), then
``stream.send(payload, pts)`` for each 20 ms Opus frame. Pure but for the
``SendTarget`` it is given.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from protocol.aiortc_compat import SendCounters, SendTarget
from protocol.red import RedPacketizer

logger = logging.getLogger(__name__)

CHROME_RED_DISTANCE = 1
"""Earlier frames in each RED packet Chrome sends (libwebrtc's default)."""
OPUS_MIME = "audio/opus"
RED_MIME = "audio/red"
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
SEQ_START_MAX = 1 << 15
"""First sequence number in the lower half (as aiortc: SRTP's rollover counter)."""

_HEADER = struct.Struct("!BBHLL")
_VERSION = 0x80
_EXTENSION = 0x10
_MARKER = 0x80


class UplinkStream:
    """One outbound Opus stream: RED when negotiated (``red_distance`` > 0), else plain."""

    def __init__(self, *, red_distance: int = CHROME_RED_DISTANCE,
                 first_sequence: int | None = None, first_timestamp: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if red_distance < 0:
            raise ValueError(f"red_distance must be >= 0, got {red_distance}")
        self.counters = SendCounters()
        self.sequence = (random.randrange(SEQ_START_MAX) if first_sequence is None
                         else first_sequence % SEQ_MOD)
        self._origin = (random.randrange(TS_MOD) if first_timestamp is None
                        else first_timestamp % TS_MOD)
        self._red_distance = red_distance
        self._clock = clock
        self.target: SendTarget | None = None
        self.red_sent = 0
        """Packets sent as RED."""
        self._first = _VERSION
        self._ssrc = 0
        self._pt = 0
        self._extensions = b""
        self._red: RedPacketizer | None = None

    @property
    def red(self) -> bool:
        """The answer accepted RED and this stream wraps its frames in it."""
        return self._red is not None

    def start(self, target: SendTarget) -> None:
        """The transport is up (``take_sending``'s call): send from now on."""
        opus = target.payload_type(OPUS_MIME)
        if opus is None:
            logger.warning("no Opus negotiated (%s): nothing is sent", target.codecs)
            return
        red = target.payload_type(RED_MIME)
        if red is not None and self._red_distance > 0:
            self._pt, self._red = red, RedPacketizer(opus, self._red_distance)
        else:
            self._pt, self._red = opus, None
        self._ssrc = target.ssrc
        self._extensions = target.header_extensions
        self._first = _VERSION | (_EXTENSION if target.header_extensions else 0)
        self.target = target

    def stop(self) -> None:
        self.target = None

    def send(self, payload: bytes, pts: int) -> None:
        """One 20 ms Opus frame, ``pts`` samples (48 kHz) after the stream's start (a DTX
        pause is a jump in ``pts``); dropped while the transport is not up."""
        target = self.target
        if target is None:
            return
        ts = (self._origin + pts) % TS_MOD
        body = payload if self._red is None else self._red.wrap(payload, ts)
        seq = self.sequence
        header = _HEADER.pack(self._first, _MARKER | self._pt, seq, ts, self._ssrc)
        target.send(target.protect(header + self._extensions + body))
        self.sequence = (seq + 1) % SEQ_MOD
        if self._red is not None:
            self.red_sent += 1
        c = self.counters
        c.packet_count += 1
        c.octet_count += len(body)
        c.rtp_timestamp = ts
        c.sent_at = self._clock()


class IdleTrack(MediaStreamTrack):
    """The track a sender handed to ``take_sending`` keeps: it never yields a frame (the
    ``UplinkStream`` sends), and ends when stopped."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._stopped = asyncio.Event()

    async def recv(self) -> Any:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._stopped.set()
