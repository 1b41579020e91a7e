"""One inbound Opus stream: packets in as they arrive, one 20 ms PCM frame out per tick.

The glue between ``protocol.reorder`` (what to do this tick) and ``protocol.opus``
(doing it): a ``Frame`` is decoded, a ``Recover`` rebuilds the lost frame
from the next packet's in-band FEC, a ``Conceal`` runs libopus PLC, and
``Silence`` is zeros. RED packets go through ``protocol.red.push_red``. No I/O and
no clock of its own: the receive path calls ``push``/``push_red`` on each RTP
packet and ``pop`` on each mixing tick, passing ``now``.

This is what replaces ``sfu.inbound``'s path (``InboundStream.packet`` ->
``MonoOpusDecoder`` -> ``JitterSlot``, since the receive-path refactor) when
it is wired in: the slot re-chunks whatever was decoded on arrival and mixes
silence for the rest; this decodes at the tick, so it can decode what was
never received. It needs each packet's RTP timestamp too (DTX pauses, and
the jitter it measures), which ``InboundStream.packet`` is not given today.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from protocol.opus import FRAME_SAMPLES, Decoder, OpusError, Pcm
from protocol.red import RedError, push_red
from protocol.reorder import (
    OPUS_DTX_MAX_BYTES,
    Conceal,
    Counters,
    Frame,
    Recover,
    ReorderBuffer,
    Silence,
)

logger = logging.getLogger(__name__)

QUIET_DBFS = -45.0
"""A decoded frame under this level is a pause: the buffer may shed delay there."""
_QUIET_POWER = (32768.0 * 10 ** (QUIET_DBFS / 20)) ** 2 * FRAME_SAMPLES


@dataclass(frozen=True, slots=True)
class UplinkStats:
    """What one inbound stream went through since the last ``take_stats``."""

    expected: int
    """Packets whose turn came (played, recovered, concealed or skipped as lost)."""
    lost_perc: float
    """Share of ``expected`` that did not arrive in time (lost, or too late), in %,
    before FEC or PLC repaired anything (that is the network's loss)."""
    jitter_ms: float
    """RFC 3550 interarrival jitter, now."""


class PlayoutStream:
    """Reorder buffer + decoder for one sender's Opus stream (mono 48 kHz out)."""

    def __init__(self, buffer: ReorderBuffer | None = None,
                 decoder: Decoder | None = None) -> None:
        self.buffer = buffer if buffer is not None else ReorderBuffer()
        self._decoder = decoder if decoder is not None else Decoder()
        self.corrupt = 0
        """Packets libopus could not decode (played as concealment)."""
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._quiet = True
        self._stats_base = (0, 0)
        self.silent = True
        """The last ``pop`` had nothing to play (``Silence``: not started, DTX, or
        concealment ran out); its zeros are not the sender's audio."""

    @property
    def counters(self) -> Counters:
        return self.buffer.counters

    def push(self, seq: int, timestamp: int, payload: bytes, now: float) -> None:
        """One RTP packet carrying Opus."""
        self.buffer.push(seq, timestamp, payload, now)

    def push_red(self, seq: int, timestamp: int, payload: bytes, now: float,
                 opus_pt: int | None = None) -> None:
        """One RTP packet carrying RED (RFC 2198) around Opus; malformed ones are dropped."""
        try:
            push_red(self.buffer, seq, timestamp, payload, now, opus_pt=opus_pt)
        except RedError as exc:
            self.corrupt += 1
            if self._debug:
                logger.debug("dropped a RED packet: %s", exc)

    def take_stats(self) -> UplinkStats:
        """Loss and jitter since the previous call: the server's view of this uplink
        (for ``fec_policy.QualityTracker``; what an RTCP receiver report would say).
        """
        c = self.buffer.counters
        delivered = c.delivered - self._stats_base[0]
        lost = c.lost - self._stats_base[1]
        self._stats_base = (c.delivered, c.lost)
        expected = delivered + lost
        perc = 100.0 * lost / expected if expected > 0 else 0.0
        return UplinkStats(expected, perc, self.buffer.jitter_s * 1000.0)

    def skip(self, now: float) -> None:
        """This tick's turn without decoding: the buffer advances (losses and DTX are
        counted as ``pop`` counts them), libopus is not called. For a sender nobody
        hears now (not among the loudest); its next decoded frame follows on."""
        action = self.buffer.pop(now, quiet=True)
        self.silent = isinstance(action, Silence)
        self._quiet = True

    def pop(self, now: float) -> Pcm:
        """This tick's 960 samples (zeros when there is nothing to play)."""
        action = self.buffer.pop(now, quiet=self._quiet)
        if isinstance(action, Frame) and len(action.payload) <= OPUS_DTX_MAX_BYTES:
            # A DTX packet (TOC only): silence, as NetEQ plays it. libopus would run PLC
            # on it and replay the end of the last word (a 1-byte packet is a loss to it).
            action = Silence()
        self.silent = isinstance(action, Silence)
        try:
            if isinstance(action, Frame):
                pcm = self._decoder.decode(action.payload)
            elif isinstance(action, Recover):
                pcm = self._decoder.decode_fec(action.next_payload)
            elif isinstance(action, Conceal):
                pcm = self._decoder.conceal()
            else:
                assert isinstance(action, Silence)
                self._quiet = True
                return np.zeros(FRAME_SAMPLES, dtype=np.int16)
        except OpusError as exc:
            self.corrupt += 1
            if self._debug:
                logger.debug("undecodable Opus packet: %s", exc)
            pcm = self._decoder.conceal()
        pcm = _fit(pcm)
        as_float = pcm.astype(np.float32)
        self._quiet = float(np.dot(as_float, as_float)) < _QUIET_POWER
        return pcm


def _fit(pcm: Pcm) -> Pcm:
    """Exactly one 20 ms frame (the answer negotiates 20 ms; a longer packet is cut)."""
    n = pcm.shape[0]
    if n == FRAME_SAMPLES:
        return pcm
    if n > FRAME_SAMPLES:
        return pcm[:FRAME_SAMPLES]
    return np.concatenate((pcm, np.zeros(FRAME_SAMPLES - n, dtype=np.int16)))
