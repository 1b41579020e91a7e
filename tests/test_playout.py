"""One inbound stream end to end: RTP-ish packets in, 20 ms PCM out, losses repaired."""

from __future__ import annotations

import numpy as np

from protocol.opus import FRAME_SAMPLES, SAMPLE_RATE_HZ, Encoder
from protocol.playout import PlayoutStream
from protocol.red import RedPacketizer
from protocol.reorder import FRAME_TS, ReorderBuffer

TICK_S = 0.02


def tone_packets(frames: int, fec: bool = True) -> list[bytes]:
    enc = Encoder(48_000, fec=fec, packet_loss_perc=20 if fec else 0)
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE_HZ
    pcm = (8_000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return [enc.encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(frames)]


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


def play(stream: PlayoutStream, packets: dict[int, bytes], ticks: int) -> list[np.ndarray]:
    out = []
    for k in range(ticks):
        if k in packets:
            stream.push(k, k * FRAME_TS, packets[k], k * TICK_S)
        out.append(stream.pop(k * TICK_S))
    return out


def test_losses_are_repaired_not_silenced() -> None:
    packets = dict(enumerate(tone_packets(60)))
    for lost in (20, 30, 31, 45):
        del packets[lost]
    stream = PlayoutStream(ReorderBuffer(initial_depth_frames=2))
    out = play(stream, packets, 62)
    assert all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.int16 for f in out)
    # Output lags one tick (the buffer's depth). No tick of playout is silent...
    assert min(rms(f) for f in out[1:61]) > 50
    # ...and a single loss rebuilt from FEC keeps most of the level (PLC fades on the
    # second frame of a double loss: libopus conceals a tone only so long).
    assert rms(out[21]) > 1_000 and rms(out[46]) > 1_000
    c = stream.counters
    assert (c.lost, c.recovered) == (4, 3)  # 30 had no next packet: 31 was lost too
    assert c.concealed >= 1


def test_silence_before_the_stream_and_after_it_ends() -> None:
    stream = PlayoutStream()
    assert not stream.pop(0.0).any()
    out = play(stream, dict(enumerate(tone_packets(10))), 25)
    assert not out[-1].any()  # concealment ran out


def test_red_packets_fill_losses_bit_exactly() -> None:
    opus = tone_packets(20, fec=False)
    red = RedPacketizer(63)
    stream = PlayoutStream()
    for k, payload in enumerate(opus):
        data = red.wrap(payload, k * FRAME_TS)
        if k != 10:
            stream.push_red(k, k * FRAME_TS, data, k * TICK_S, opus_pt=63)
        stream.pop(k * TICK_S)
    assert stream.counters.red_recovered == 1
    assert stream.counters.lost == 0


def test_corrupt_packets_are_concealed_and_counted() -> None:
    stream = PlayoutStream()
    packets = dict(enumerate(tone_packets(10)))
    packets[5] = b"\xff\xff\xff"
    out = play(stream, packets, 10)
    assert stream.corrupt == 1
    assert rms(out[6]) > 1_000
    stream.push_red(11, 11 * FRAME_TS, b"\xef", 0.22)  # malformed RED
    assert stream.corrupt == 2


def test_dtx_pause_from_libopus_is_silence_not_loss() -> None:
    """Talk, 1 s of silence, talk, silence, with DTX on and sent as WebRTC sends it."""
    t = np.arange(25 * FRAME_SAMPLES) / SAMPLE_RATE_HZ
    burst = (8_000 * np.sin(2 * np.pi * 300 * t) * np.sin(np.pi * t / t[-1])).astype(np.int16)
    pause = np.zeros(50 * FRAME_SAMPLES, dtype=np.int16)
    pcm = np.concatenate((burst, pause, burst, pause[: 30 * FRAME_SAMPLES]))
    enc = Encoder(32_000, dtx=True)
    sent = []
    in_dtx = False
    seq = 0
    for i in range(pcm.shape[0] // FRAME_SAMPLES):
        payload = enc.encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        if len(payload) <= 2:  # WebRtcOpus_Encode: the first DTX packet goes, later ones don't
            if in_dtx:
                continue
            in_dtx = True
        else:
            in_dtx = False
        sent.append((seq, i * FRAME_TS, payload, i * TICK_S))
        seq += 1
    assert len(sent) < pcm.shape[0] // FRAME_SAMPLES - 20  # DTX really skipped packets
    stream = PlayoutStream()
    out = []
    j = 0
    for k in range(pcm.shape[0] // FRAME_SAMPLES + 10):
        now = k * TICK_S + 0.007
        while j < len(sent) and sent[j][3] <= now:
            stream.push(sent[j][0], sent[j][1], sent[j][2], sent[j][3])
            j += 1
        out.append(stream.pop(now))
    c = stream.counters
    assert (c.lost, c.concealed, c.late) == (0, 0, 0)
    assert c.dtx >= 20
    levels = [rms(f) for f in out]
    assert max(levels[5:20]) > 3_000 and max(levels[80:95]) > 3_000  # both bursts heard


def test_a_dtx_packet_right_after_speech_plays_silence_not_the_last_word_again() -> None:
    """A sender that enters DTX at once (a TOC-only packet after a loud frame, then one per
    400 ms): libopus would conceal the last frame on each; the stream plays silence."""
    packets = tone_packets(10)
    dtx = bytes([packets[0][0] & 0xFC])  # TOC only, code 0
    stream = PlayoutStream()
    out, silent = [], []
    seq = 0
    for k in range(60):
        payload = packets[k] if k < 10 else dtx if k in (10, 30, 50) else None
        if payload is not None:
            stream.push(seq, k * FRAME_TS, payload, k * TICK_S)
            seq += 1
        out.append(stream.pop(k * TICK_S))
        silent.append(stream.silent)
    assert min(rms(f) for f in out[2:10]) > 3_000
    start = 10 + 3  # the DTX packet's turn, at the (initial) playout delay
    assert max(rms(f) for f in out[start:]) == 0.0 and all(silent[start:])
    assert (stream.counters.lost, stream.counters.concealed) == (0, 0)


def test_uplink_stats_between_calls() -> None:
    packets = dict(enumerate(tone_packets(50)))
    for lost in (10, 20, 21, 30, 40):
        del packets[lost]
    stream = PlayoutStream(ReorderBuffer(initial_depth_frames=2))
    play(stream, packets, 26)
    first = stream.take_stats()
    assert first.expected == 25 and first.lost_perc == 100.0 * 3 / 25
    play_from = {k: v for k, v in packets.items() if k >= 26}
    for k in range(26, 52):
        if k in play_from:
            stream.push(k, k * FRAME_TS, play_from[k], k * TICK_S)
        stream.pop(k * TICK_S)
    second = stream.take_stats()
    assert second.lost_perc == 100.0 * 2 / second.expected
    assert second.jitter_ms < 1.0
    assert stream.take_stats().expected == 0
