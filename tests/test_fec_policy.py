"""Loss -> encoder settings with hysteresis; RTCP stats -> connection quality."""

from __future__ import annotations

import pytest

from sfu.fec_policy import (
    DEFAULT_BITRATE_BPS,
    FEC_EXTRA_BPS,
    EncoderSettings,
    FecController,
    LossReports,
    Quality,
    QualityTracker,
    RedController,
    apply,
    classify,
    loss_perc,
    quality_score,
)

OFF = EncoderSettings(False, 0, DEFAULT_BITRATE_BPS)


def on(perc: int) -> EncoderSettings:
    return EncoderSettings(True, perc, DEFAULT_BITRATE_BPS + FEC_EXTRA_BPS)


@pytest.mark.parametrize(("fraction", "perc"), [(0, 0.0), (26, 10.15625), (128, 50.0),
                                                (255, 99.609375)])
def test_fraction_lost_is_eight_bit_fixed_point(fraction: int, perc: float) -> None:
    assert loss_perc(fraction) == perc


@pytest.mark.parametrize("bad", [-1, 256])
def test_fraction_lost_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="8-bit"):
        loss_perc(bad)


def test_worst_listener_over_the_window() -> None:
    reports = LossReports()
    reports.report("a", 26, now=0.0)   # 10 %
    reports.report("a", 0, now=2.0)
    reports.report("b", 13, now=2.0)   # 5 %
    assert reports.worst(["a", "b"], now=3.0) == pytest.approx(10.15625)
    assert reports.worst(["b"], now=3.0) == pytest.approx(5.078125)
    assert reports.worst(["a", "b"], now=6.0) == pytest.approx(5.078125)  # a's 10 % aged out
    assert reports.worst(["a", "b", "nobody"], now=20.0) == 0.0
    reports.forget("b")
    assert reports.worst(["b"], now=2.5) == 0.0
    assert reports.worst([], now=0.0) == 0.0


# (time s, worst loss %, expected settings after the update)
FEC_TIMELINE = [
    (0.0, 0.0, OFF),
    (1.0, 1.5, OFF),                 # under the on-threshold
    (2.0, 2.0, on(5)),               # on; expected loss floored at 5 %
    (3.0, 12.0, on(15)),             # rises at once, rounded up to a 5-point step
    (4.0, 40.0, on(30)),             # capped
    (5.0, 6.0, on(30)),              # falls only after a hold...
    (9.0, 6.0, on(30)),
    (10.0, 6.0, on(10)),             # ...of 5 s
    (11.0, 0.5, on(10)),             # quiet, but FEC stays on for the hold
    (15.9, 0.0, on(10)),
    (16.0, 0.0, on(5)),              # the expected loss falls to the floor after 5 s
    (18.0, 1.5, on(5)),              # 1.5 % is not quiet: the off-hold restarts
    (19.0, 0.0, on(5)),
    (28.9, 0.0, on(5)),
    (29.0, 0.0, OFF),                # 10 s quiet: off, bitrate back down
    (30.0, 1.9, OFF),
]


def test_fec_hysteresis_timeline() -> None:
    ctl = FecController()
    got = [(t, ctl.update(loss, t)) for t, loss, _ in FEC_TIMELINE]
    assert got == [(t, want) for t, _, want in FEC_TIMELINE]


def test_apply_sets_only_what_changed() -> None:
    calls: list[tuple[str, object]] = []

    class Fake:
        def set_fec(self, on: bool) -> None:
            calls.append(("fec", on))

        def set_packet_loss_perc(self, percent: int) -> None:
            calls.append(("loss", percent))

        def set_bitrate(self, bitrate_bps: int) -> None:
            calls.append(("bitrate", bitrate_bps))

    apply(Fake(), OFF, None)
    assert calls == [("fec", False), ("loss", 0), ("bitrate", 32_000)]
    calls.clear()
    apply(Fake(), on(10), OFF)
    assert calls == [("fec", True), ("loss", 10), ("bitrate", 48_000)]
    calls.clear()
    apply(Fake(), on(15), on(10))
    assert calls == [("loss", 15)]


def test_fec_settings_drive_a_real_encoder() -> None:
    from protocol.opus import Encoder

    enc = Encoder()
    apply(enc, on(15), OFF)
    state = enc.state()
    assert (state.fec, state.packet_loss_perc, state.bitrate_bps) == (True, 15, 48_000)


RED_TIMELINE = [(0.0, 3.0, False), (1.0, 5.0, True), (2.0, 1.0, True), (11.9, 1.0, True),
                (12.0, 0.0, False), (13.0, 4.9, False)]


def test_red_hysteresis() -> None:
    ctl = RedController()
    assert [ctl.update(loss, t) for t, loss, _ in RED_TIMELINE] == [w for *_, w in RED_TIMELINE]


QUALITY_CASES = [
    # loss %, jitter ms, rtt ms, fec, red, class
    (0.0, 0.0, 0.0, False, False, Quality.EXCELLENT),
    (0.0, 20.0, 100.0, False, False, Quality.EXCELLENT),
    (2.0, 10.0, 50.0, False, False, Quality.EXCELLENT),
    (3.0, 10.0, 50.0, False, False, Quality.GOOD),       # 2.5 % drops Opus to good
    (3.0, 10.0, 50.0, True, False, Quality.EXCELLENT),   # FEC repairs some
    (8.0, 0.0, 0.0, False, False, Quality.POOR),         # 7.5 % drops plain Opus to poor
    (8.0, 0.0, 0.0, True, False, Quality.GOOD),
    (12.0, 0.0, 0.0, False, True, Quality.GOOD),         # RED absorbs more
    (0.0, 60.0, 300.0, False, False, Quality.EXCELLENT), # 270 ms effective delay: -15
    (0.0, 100.0, 400.0, False, False, Quality.GOOD),     # 400 ms: -28
    (0.0, 200.0, 1000.0, False, False, Quality.POOR),    # 900 ms: -78
]


@pytest.mark.parametrize(("loss", "jitter", "rtt", "fec", "red", "want"), QUALITY_CASES)
def test_quality_classes(loss: float, jitter: float, rtt: float, fec: bool, red: bool,
                         want: Quality) -> None:
    assert classify(quality_score(loss, jitter, rtt, fec=fec, red=red)) is want


def test_quality_tracker_reports_changes_only_and_recovers_slowly() -> None:
    q = QualityTracker()
    assert q.update(0.0, 5.0, 40.0) is None
    assert q.update(10.0, 5.0, 40.0) is Quality.GOOD      # falls fast: 70 % of the way...
    assert q.update(10.0, 5.0, 40.0) is Quality.POOR      # ...so two bad reports make it poor
    assert q.update(10.0, 5.0, 40.0) is None
    events = [q.update(0.0, 5.0, 40.0) for _ in range(6)]
    assert events[0] is None or events[0] is Quality.GOOD  # climbs back step by step
    assert Quality.GOOD in events and events[-1] is None
    assert q.quality is Quality.EXCELLENT
    assert events.index(Quality.EXCELLENT) > events.index(Quality.GOOD)
    assert str(Quality.POOR) == "poor"
