"""The voice path offline: talker -> uplink -> Disco -> downlink -> listener, on a virtual clock.

Used by ``tests/test_voice_quality_offline.py`` and ``bench/voice_quality.py``.
Everything is simulated in one process without sockets or sleeping, so a
10 s clip takes a fraction of a second and every run is repeatable (seeded
impairments):

1. the talker's client encodes 20 ms frames (``protocol.opus``; FEC on when the
   answer asked for it, as browsers do after ``useinbandfec=1``) and sends one
   packet every 20 ms;
2. the uplink (``tests.impair``) loses, delays and reorders them;
3. the server's receive path turns arrivals into one frame per 20 ms tick:
   ``disco`` mode is ``protocol.playout.PlayoutStream`` (reorder buffer, FEC from
   the next packet, PLC); ``naive`` mode is what Disco did before (a packet
   older than the newest is dropped, frames queue in a 3-frame slot, an empty
   slot mixes silence);
4. the server re-encodes each tick's frame (the mix of one talker is the
   talker), with FEC and expected loss from ``sfu.fec_policy`` in ``disco``
   mode, plain in ``naive`` mode;
5. the downlink impairs those packets;
6. the listener's client (a browser: its NetEQ reorders, uses FEC, conceals,
   so ``PlayoutStream`` in both modes) plays one frame per 20 ms.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from protocol.opus import FRAME_SAMPLES, Decoder, Encoder, OpusError, Pcm
from protocol.playout import PlayoutStream
from protocol.red import RedPacketizer
from protocol.reorder import FRAME_TS, SEQ_MOD
from sfu.fec_policy import EncoderSettings, FecController
from tests.impair import CLEAN, Arrival, Impairment, impair

FRAME_S = 0.02
SERVER_TICK_PHASE_S = 0.007
"""The server's 20 ms clock is not in phase with the talker's."""
CLIENT_TICK_PHASE_S = 0.013
TAIL_FRAMES = 15
"""Ticks run this long after the last packet so the buffers drain (300 ms)."""
BITRATE_BPS = 32_000
NAIVE_SLOT_FRAMES = 3
RED_OPUS_PT = 111
RED_DISTANCE = 2
"""Frames repeated in each RED packet (Chrome's RED repeats up to 2 when it has them)."""
MODES = ("disco", "disco+red", "naive")


@dataclass(frozen=True)
class Condition:
    name: str
    up: Impairment = CLEAN
    down: Impairment = CLEAN


def encode(pcm: Pcm, encoder: Encoder, start_s: float = 0.0,
           red: RedPacketizer | None = None) -> list[tuple[int, bytes, float]]:
    """Frames -> ``(seq, payload, send_time)``, seq starting near the wrap on purpose.

    With ``red``, each payload is a RED packet carrying the frames before it too.
    """
    frames = pcm.shape[0] // FRAME_SAMPLES
    first_seq = SEQ_MOD - 100
    out = []
    for i in range(frames):
        payload = encoder.encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        if red is not None:
            payload = red.wrap(payload, i * FRAME_TS)
        out.append(((first_seq + i) % SEQ_MOD, payload, start_s + i * FRAME_S))
    return out


def receive_disco(arrivals: list[Arrival], ticks: int, phase_s: float,
                  stream: PlayoutStream | None = None, red: bool = False) -> Pcm:
    """Arrivals -> one frame per tick through the reorder buffer, FEC and PLC."""
    stream = stream if stream is not None else PlayoutStream()
    out = []
    i = 0
    base_seq = arrivals[0].seq if arrivals else 0
    for k in range(ticks):
        now = k * FRAME_S + phase_s
        while i < len(arrivals) and arrivals[i].time <= now:
            a = arrivals[i]
            # RTP timestamps follow sequence numbers (no DTX in this clip).
            ts = ((a.seq - base_seq) % SEQ_MOD) * FRAME_TS
            if red:
                stream.push_red(a.seq, ts, a.payload, a.time, opus_pt=RED_OPUS_PT)
            else:
                stream.push(a.seq, ts, a.payload, a.time)
            i += 1
        out.append(stream.pop(now))
    return np.concatenate(out)


def receive_naive(arrivals: list[Arrival], ticks: int, phase_s: float) -> Pcm:
    """Disco before #14: newest-only pass-through, decode on arrival, 3-frame slot, silence."""
    decoder = Decoder()
    slot: collections.deque[Pcm] = collections.deque(maxlen=NAIVE_SLOT_FRAMES)
    last: int | None = None
    out = []
    i = 0
    for k in range(ticks):
        now = k * FRAME_S + phase_s
        while i < len(arrivals) and arrivals[i].time <= now:
            a = arrivals[i]
            i += 1
            if last is not None and (a.seq == last or (a.seq - last) % SEQ_MOD >= SEQ_MOD // 2):
                continue  # late or duplicate
            last = a.seq
            try:
                slot.append(decoder.decode(a.payload))
            except OpusError:
                continue
        out.append(slot.popleft() if slot else np.zeros(FRAME_SAMPLES, dtype=np.int16))
    return np.concatenate(out)


def run(pcm: Pcm, condition: Condition, mode: str) -> Pcm:
    """What the listener hears of ``pcm`` said by the talker, through Disco in ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode is one of {MODES}, not {mode!r}")
    disco = mode != "naive"
    use_red = mode == "disco+red"

    def packetizer() -> RedPacketizer | None:
        return RedPacketizer(RED_OPUS_PT, RED_DISTANCE) if use_red else None
    frames = pcm.shape[0] // FRAME_SAMPLES
    ticks = frames + TAIL_FRAMES

    # The expected loss each encoder is told: what RTCP would report on its hop.
    def settings_for(imp: Impairment) -> EncoderSettings:
        if not disco:
            return EncoderSettings(False, 0, BITRATE_BPS)
        loss = imp.loss * 100.0 + (100.0 * imp.burst_p / (imp.burst_p + imp.burst_r)
                                   if imp.burst_p else 0.0)
        return FecController(BITRATE_BPS).update(loss, 0.0)

    up = settings_for(condition.up)
    # A browser told useinbandfec=1 and maxaveragebitrate=48000 (sdp_opus) sends FEC at
    # the loss it measures, at that bitrate: what the policy gives the server's encoders.
    talker = Encoder(up.bitrate_bps, fec=up.fec, packet_loss_perc=up.packet_loss_perc)
    uplink = impair(encode(pcm, talker, red=packetizer()), condition.up)
    if disco:
        heard = receive_disco(uplink, ticks, SERVER_TICK_PHASE_S, red=use_red)
    else:
        heard = receive_naive(uplink, ticks, SERVER_TICK_PHASE_S)

    down = settings_for(condition.down)
    server = Encoder(down.bitrate_bps, fec=down.fec, packet_loss_perc=down.packet_loss_perc)
    downlink = impair(encode(heard, server, start_s=SERVER_TICK_PHASE_S, red=packetizer()),
                      condition.down)
    return receive_disco(downlink, ticks + TAIL_FRAMES, SERVER_TICK_PHASE_S + CLIENT_TICK_PHASE_S,
                         red=use_red)
