"""``InboundStream``: RTP packets of one inbound stream -> one 20 ms frame per tick.

Pure apart from libopus: real Opus packets (``protocol.opus.Encoder``, FEC on as a
browser sends after ``useinbandfec=1``), RTP sequence numbers and timestamps
as a sender numbers them, time passed in. The reorder rules themselves are
tested in test_reorder.py, the decoding in test_playout.py; here: what the
tick gets (a frame or None) and what the stream reports.
"""

from __future__ import annotations

import math

import numpy as np

from protocol.opus import Encoder
from protocol.red import RedPacketizer
from protocol.reorder import FRAME_TS
from sfu.inbound import InboundStream, JitterSlot
from sfu.levels import levels_dbov
from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ

TICK_S = 0.02
TS0 = 4_294_967_296 - 3 * FRAME_TS
"""The RTP timestamp wraps three frames in."""
SEQ0 = 65_534
"""And the sequence number two packets in."""


def opus_packets(count: int, freq_hz: float = 440.0) -> list[bytes]:
    encoder = Encoder(48_000, fec=True, packet_loss_perc=10)
    n = np.arange(count * FRAME_SAMPLES)
    pcm = (np.sin(2 * math.pi * freq_hz * n / SAMPLE_RATE_HZ) * 8000).astype(np.int16)
    return [encoder.encode(pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]) for i in range(count)]


def header(k: int) -> tuple[int, int]:
    """Packet k's RTP sequence number and timestamp."""
    return (SEQ0 + k) % 65_536, (TS0 + k * FRAME_TS) % (1 << 32)


def level(frame: np.ndarray | None) -> float:
    assert frame is not None
    return float(levels_dbov(frame)[0])


def test_packets_play_after_the_playout_delay_with_their_arrival_time() -> None:
    stream = InboundStream("alice")
    packets = opus_packets(20)
    frames = []
    for k, payload in enumerate(packets):
        now = 5.0 + k * TICK_S
        seq, ts = header(k)
        assert stream.packet(seq, ts, payload, now)
        frames.append(stream.pop(now))
    assert stream.packets_in == 20 and stream.last_packet_at == 5.0 + 19 * TICK_S
    delay = next(i for i, f in enumerate(frames) if f is not None)
    assert delay == 0  # a clean stream plays at the first tick after its first packet
    assert all(f is not None and f.shape == (FRAME_SAMPLES,) for f in frames[delay:])
    assert level(frames[-1]) > -25  # the tone, not silence
    assert stream.ready_at == 5.0 + (19 - delay) * TICK_S  # the frame played arrived then
    c = stream.playout.counters
    assert (c.lost, c.late, c.duplicate) == (0, 0, 0)


def test_reordered_and_lost_packets_are_rebuilt_and_the_first_loss_deepens_the_buffer() -> None:
    """Packet k arrives at tick k, but for a swap, a loss, and a second swap.

    The buffer starts at one frame: 11 overtaking 10 makes 10 late (rebuilt from
    11's FEC, no delay added); losing 20 is an underrun (concealed), after which
    the buffer grows a frame (20's FEC from 21 plays late) and keeps it for
    FEC; then 31 overtaking 30 costs nothing, and losing 35 is rebuilt in time.
    """
    stream = InboundStream()
    packets = opus_packets(45)
    arrival = {k: k for k in range(45)}
    arrival[10], arrival[11] = 11, 10
    arrival[30], arrival[31] = 31, 30
    del arrival[20], arrival[35]
    played = []
    for tick in range(45):
        for k in [k for k, t in arrival.items() if t == tick]:
            seq, ts = header(k)
            stream.packet(seq, ts, packets[k], tick * TICK_S)
        played.append(stream.pop(tick * TICK_S))
    c = stream.playout.counters
    assert (c.late, c.lost, c.recovered, c.concealed) == (1, 3, 3, 1)
    assert played[0] is not None and min(level(f) for f in played[:44]) > -30  # no hole
    assert stream.playout.buffer.target_frames == 2


def test_duplicates_and_late_packets_are_counted_not_played() -> None:
    stream = InboundStream()
    packets = opus_packets(12)
    for k in range(10):
        seq, ts = header(k)
        if k != 3:
            stream.packet(seq, ts, packets[k], k * TICK_S)
        stream.pop(k * TICK_S)
    seq, ts = header(9)
    stream.packet(seq, ts, packets[9], 0.2)  # again
    seq, ts = header(3)
    stream.packet(seq, ts, packets[3], 0.2)  # its turn has passed
    c = stream.playout.counters
    assert (c.duplicate, c.late, c.lost) == (1, 1, 1)


def test_a_dtx_pause_is_silence_not_loss_and_keeps_the_sender_heard() -> None:
    """A DTX sender: speech, a TOC-only packet, then one refresh every 400 ms."""
    stream = InboundStream()
    packets = opus_packets(10)
    dtx = bytes([packets[0][0] & 0xFC])  # TOC only (code 0): what libopus sends in DTX
    sent = {k: packets[k] for k in range(10)}
    sent[10] = dtx
    for k in range(30, 200, 20):  # 400 ms apart, timestamps advance, sequence numbers do not skip
        sent[k] = dtx
    seqs = {k: i for i, k in enumerate(sorted(sent))}
    frames = []
    for tick in range(200):
        if tick in sent:
            stream.packet(seqs[tick] % 65_536, tick * FRAME_TS, sent[tick], tick * TICK_S)
        frames.append(stream.pop(tick * TICK_S))
    c = stream.playout.counters
    assert c.lost == 0 and c.concealed == 0 and c.dtx > 100
    assert sum(f is None for f in frames[20:]) > 150  # nothing to mix: not a participant's frame
    assert stream.last_packet_at == 190 * TICK_S  # heard from: not expired as vanished


def test_red_is_unpacked_and_a_lost_primary_comes_from_the_redundancy() -> None:
    stream = InboundStream(opus_pt=111)
    red = RedPacketizer(111)
    packets = opus_packets(30)
    for k, payload in enumerate(packets):
        seq, ts = header(k)
        data = red.wrap(payload, ts)
        if k != 12:
            assert stream.packet(seq, ts, data, k * TICK_S, mime="audio/red")
        stream.pop(k * TICK_S)
    c = stream.playout.counters
    assert c.red_recovered == 1 and c.lost == 0 and c.delivered >= 26


def test_other_codecs_and_padding_add_nothing() -> None:
    stream = InboundStream()
    assert not stream.packet(1, 0, b"\xff" * 160, 0.0, mime="audio/pcmu")
    assert not stream.packet(2, 960, b"", 0.02)  # padding only
    assert stream.last_packet_at is None and stream.pop(0.04) is None
    assert stream.packet(3, 1920, opus_packets(1)[0], 0.04)  # and the stream goes on
    assert stream.playout.counters.received == 1


def test_the_pcm_slot_is_a_frame_source_too() -> None:
    slot = JitterSlot(max_frames=2)
    slot.push(np.ones(FRAME_SAMPLES, dtype=np.int16), at=1.0)
    frame = slot.pop(1.01)
    assert frame is not None and slot.ready_at == 1.0 and slot.pop(1.03) is None
