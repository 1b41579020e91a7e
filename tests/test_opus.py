"""The libopus binding: encode/decode, run-time ctls, FEC recovery, concealment."""

from __future__ import annotations

import numpy as np
import pytest

from protocol import opus
from protocol.opus import FRAME_SAMPLES, SAMPLE_RATE_HZ, Decoder, Encoder, OpusError


def tone(freq_hz: float, frames: int, amplitude: float = 8_000.0) -> np.ndarray:
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE_HZ
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def chirpy(frames: int, seed: int = 1) -> np.ndarray:
    """Speech-like test signal: a tone whose pitch changes every 100 ms, with noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(0, frames, 5):
        f = 200.0 + 150.0 * (i % 7)
        parts.append(tone(f, 5, 6_000.0).astype(np.float64))
    x = np.concatenate(parts)[: frames * FRAME_SAMPLES]
    x += rng.normal(0, 300, x.shape)
    return np.clip(x, -32768, 32767).astype(np.int16)


def frames_of(x: np.ndarray) -> list[np.ndarray]:
    return [x[i : i + FRAME_SAMPLES] for i in range(0, x.shape[0], FRAME_SAMPLES)]


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.shape[0])))
    return float(np.fft.rfftfreq(x.shape[0], 1 / SAMPLE_RATE_HZ)[int(np.argmax(spectrum))])


def corr(a: np.ndarray, b: np.ndarray, max_lag: int = 480) -> float:
    """Best normalised correlation of two frames over small lags (codec delay)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    best = 0.0
    for lag in range(-max_lag, max_lag + 1, 4):
        x, y = (a[lag:], b[: b.shape[0] - lag]) if lag >= 0 else (a[:lag], b[-lag:])
        denom = float(np.linalg.norm(x) * np.linalg.norm(y)) or 1.0
        best = max(best, float(np.dot(x, y)) / denom)
    return best


def test_version_and_library_loaded() -> None:
    assert opus.version().startswith("libopus")


def test_round_trip_keeps_the_frequency() -> None:
    enc, dec = Encoder(32_000), Decoder()
    out = np.concatenate([dec.decode(enc.encode(f)) for f in frames_of(tone(1_000.0, 50))])
    assert out.shape[0] == 50 * FRAME_SAMPLES
    assert abs(peak_hz(out[FRAME_SAMPLES * 5 :]) - 1_000.0) < 10.0
    assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) > 3_000  # not attenuated to nothing


def test_fec_rebuilds_a_lost_frame_from_the_next_packet() -> None:
    enc = Encoder(32_000, fec=True, packet_loss_perc=20)
    x = chirpy(60)
    packets = [enc.encode(f) for f in frames_of(x)]
    lost = 40
    assert opus.packet_has_fec(packets[lost + 1])
    # Reference: what a decoder that got every packet outputs for the lost frame.
    ref_dec = Decoder()
    clean = [ref_dec.decode(p) for p in packets]
    dec = Decoder()
    for p in packets[:lost]:
        dec.decode(p)
    recovered = dec.decode_fec(packets[lost + 1])
    after = dec.decode(packets[lost + 1])
    assert recovered.shape == (FRAME_SAMPLES,)
    assert corr(recovered, clean[lost], max_lag=0) > 0.7
    assert corr(after, clean[lost + 1], max_lag=0) > 0.7

    # Without FEC data the same call can only conceal: clearly worse.
    plain = Encoder(32_000)
    plain_packets = [plain.encode(f) for f in frames_of(x)]
    assert not opus.packet_has_fec(plain_packets[lost + 1])
    dec2, ref2 = Decoder(), Decoder()
    clean2 = [ref2.decode(p) for p in plain_packets]
    for p in plain_packets[:lost]:
        dec2.decode(p)
    guessed = dec2.decode_fec(plain_packets[lost + 1])
    assert corr(guessed, clean2[lost], max_lag=0) < corr(recovered, clean[lost], max_lag=0)


def test_conceal_continues_the_sound() -> None:
    enc, dec = Encoder(32_000), Decoder()
    for f in frames_of(tone(500.0, 20)):
        dec.decode(enc.encode(f))
    plc = dec.conceal()
    assert plc.shape == (FRAME_SAMPLES,)
    assert np.sqrt(np.mean(plc.astype(np.float64) ** 2)) > 1_000
    assert abs(peak_hz(plc) - 500.0) < 60.0  # 50 Hz bins on 20 ms
    # A long gap fades out rather than buzzing forever.
    for _ in range(30):
        last = dec.conceal()
    assert np.sqrt(np.mean(last.astype(np.float64) ** 2)) < 200


def test_ctls_apply_at_run_time_without_reset() -> None:
    enc, dec = Encoder(16_000), Decoder()
    x = frames_of(tone(700.0, 100))
    low = [enc.encode(f) for f in x[:50]]
    enc.set_bitrate(64_000)
    enc.set_complexity(5)
    enc.set_fec(True)
    enc.set_packet_loss_perc(15)
    assert (enc.state().bitrate_bps, enc.state().complexity, enc.state().fec,
            enc.state().packet_loss_perc, enc.state().dtx) == (
        64_000, 5, True, 15, False)
    high = [enc.encode(f) for f in x[50:]]
    assert np.mean([len(p) for p in high[5:]]) > 2 * np.mean([len(p) for p in low[5:]])
    # No reset: the stream decodes continuously across the change, no glitch at the seam.
    out = np.concatenate([dec.decode(p) for p in low + high])
    seam = out[49 * FRAME_SAMPLES : 52 * FRAME_SAMPLES]
    assert abs(peak_hz(seam) - 700.0) < 20.0
    power = np.convolve(seam.astype(np.float64) ** 2, np.ones(96) / 96, "valid")
    assert np.min(power) > 1e6  # no dropout: 2 ms windows all stay loud


def test_dtx_sends_tiny_packets_in_silence() -> None:
    enc = Encoder(32_000)
    enc.set_dtx(True)
    assert enc.state().dtx
    sizes = [len(enc.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16))) for _ in range(50)]
    assert min(sizes[-20:]) <= 2  # a TOC-only DTX packet; WebRTC receivers call <= 2 B DTX


@pytest.mark.parametrize("bad", [
    np.zeros(959, dtype=np.int16),
    np.zeros(FRAME_SAMPLES, dtype=np.float32),
])
def test_bad_pcm_is_a_clear_error(bad: np.ndarray) -> None:
    with pytest.raises(OpusError, match=r"int16|960"):
        Encoder().encode(bad)


def test_bad_settings_and_packets_are_clear_errors() -> None:
    enc = Encoder()
    with pytest.raises(OpusError, match="bitrate"):
        enc.set_bitrate(1_000)
    with pytest.raises(OpusError, match="loss"):
        enc.set_packet_loss_perc(101)
    with pytest.raises(OpusError, match="complexity"):
        enc.set_complexity(11)
    dec = Decoder()
    with pytest.raises(OpusError, match="empty"):
        dec.decode(b"")
    with pytest.raises(OpusError, match="opus_decode"):
        dec.decode(b"\xff\xff\xff")  # code 3, VBR, frame count past the limit: corrupt
    enc.close()
    with pytest.raises(OpusError, match="closed"):
        enc.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16))
