"""Pure tests of the mixing core: plan, mix-minus, clipping, gains, dedupe,
encoder continuity, levels/speaking hysteresis, ducking ramps. No event loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sfu.ducking import Ducker, GainRamp, db_to_gain, fade
from sfu.inbound import JitterSlot
from sfu.levels import MIN_DBOV, SpeakingDetector, levels_dbov
from sfu.mixer import (
    FRAME_SAMPLES,
    SILENCE,
    MixPlan,
    assign_encoders,
    group_listeners,
    mix,
    mix_one,
)
from sfu.peer import check_offer_text


def const(value: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


# --- mix plan and mix-minus ------------------------------------------------------------

GROUP = ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("active", "expected"),
    [
        # nobody talks: everybody shares the empty mix
        ([], {"a": (), "b": (), "c": (), "d": ()}),
        # one talker hears nothing (mix-minus), everyone else hears them
        (["a"], {"a": (), "b": (("a", 1.0),), "c": (("a", 1.0),), "d": (("a", 1.0),)}),
        (
            ["a", "c"],
            {
                "a": (("c", 1.0),),
                "b": (("a", 1.0), ("c", 1.0)),
                "c": (("a", 1.0),),
                "d": (("a", 1.0), ("c", 1.0)),
            },
        ),
    ],
)
def test_group_room_mix_minus(active: list[str], expected: dict[str, tuple]) -> None:
    assert MixPlan().recipes(GROUP, active) == expected


def test_listener_never_hears_self_even_if_audibility_says_so() -> None:
    plan = MixPlan(audible={"a": {"a": 1.0, "b": 1.0}})
    assert plan.recipes(["a"], ["a", "b"]) == {"a": (("b", 1.0),)}


@pytest.mark.parametrize(
    ("audible", "volumes", "listener", "expected"),
    [
        (None, {"a": {"b": 0.5}}, "a", (("b", 0.5), ("c", 1.0))),
        (None, {"a": {"b": 0.0}}, "a", (("c", 1.0),)),  # volume 0 leaves the mix
        (None, {"a": {"b": 2.0}}, "b", (("a", 1.0), ("c", 1.0))),  # a's setting, not b's
        ({"a": {"b": 0.5}}, None, "a", (("b", 0.5),)),  # proximity: c too far
        ({"a": {"b": 0.5, "c": 1.0}}, {"a": {"b": 2.0}}, "a", (("b", 1.0), ("c", 1.0))),
        ({"a": {"b": 1.0}}, None, "c", ()),  # listener missing from the map hears nobody
    ],
)
def test_gains_audibility_and_volumes(
    audible: dict | None, volumes: dict | None, listener: str, expected: tuple
) -> None:
    plan = MixPlan(audible=audible)
    for lst, row in (volumes or {}).items():
        for spk, g in row.items():
            plan.set_volume(lst, spk, g)
    assert plan.recipes([listener], ["a", "b", "c"])[listener] == expected


@pytest.mark.parametrize("gain", [-0.1, 2.01, float("nan"), float("inf")])
def test_volume_out_of_range(gain: float) -> None:
    with pytest.raises(ValueError):
        MixPlan().set_volume("a", "b", gain)


def test_volume_back_to_one_restores_fast_path_and_forget() -> None:
    plan = MixPlan()
    plan.set_volume("a", "b", 0.3)
    plan.set_volume("a", "b", 1.0)
    assert not plan.volumes
    plan.set_volume("a", "b", 0.3)
    plan.set_volume("c", "a", 0.3)
    plan.forget("a")
    assert plan.volumes == {}


# --- summing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "gains", "expected"),
    [
        ([1000, 2000], [1.0, 1.0], 3000),
        ([30_000, 30_000], [1.0, 1.0], 32_767),  # clipped, not wrapped to negative
        ([-30_000, -30_000], [1.0, 1.0], -32_768),
        ([32_767] * 100, [1.0] * 100, 32_767),  # int32 headroom for big rooms
        ([10_000, -10_000], [1.0, 1.0], 0),
        ([1000], [0.5], 500),
        ([1000], [2.0], 2000),
        ([20_000], [2.0], 32_767),  # gain can clip too
        ([1001, 3], [0.5, 1.0], 503),  # 500.5 rounds to even -> 500, + 3
    ],
)
def test_sum_clip_and_gains(values: list[int], gains: list[float], expected: int) -> None:
    frames = {f"s{i}": const(v) for i, v in enumerate(values)}
    recipe = tuple((f"s{i}", g) for i, g in enumerate(gains))
    out = mix_one(recipe, frames)
    assert out.dtype == np.int16 and out.shape == (FRAME_SAMPLES,)
    assert np.all(out == expected)


def test_bed_is_added_to_every_mix_and_missing_frames_are_silence() -> None:
    bed = np.full(FRAME_SAMPLES, 100, dtype=np.int32)
    recipes = {"a": (("b", 1.0),), "b": (("a", 1.0),), "c": (("a", 1.0), ("b", 1.0))}
    mixes, groups = mix(recipes, {"a": const(1000)}, bed)  # b sent nothing this tick
    by_listener = {lst: mixes[r] for r, ls in groups.items() for lst in ls}
    assert np.all(by_listener["a"] == 100)
    assert np.all(by_listener["b"] == 1100)
    assert np.all(by_listener["c"] == 1100)
    assert np.all(mix_one((), {}) == SILENCE)


def test_dedupe_identical_mixes_share_one_encode() -> None:
    listeners = [f"p{i}" for i in range(50)]
    active = ["p0", "p1", "p2"]
    frames = {p: const(100 * (i + 1)) for i, p in enumerate(active)}
    recipes = MixPlan().recipes(listeners, active)
    mixes, groups = mix(recipes, frames)
    # each talker hears the other two; the 47 others share one mix
    assert len(mixes) == 4
    assert sorted(len(ls) for ls in groups.values()) == [1, 1, 1, 47]
    shared = max(groups, key=lambda r: len(groups[r]))
    assert np.all(mixes[shared] == 600)


def test_dedupe_with_volumes_splits_only_who_differs() -> None:
    plan = MixPlan()
    plan.set_volume("p5", "p0", 0.5)
    groups = group_listeners(plan.recipes([f"p{i}" for i in range(10)], ["p0"]))
    assert sorted(len(ls) for ls in groups.values()) == [1, 1, 8]


# --- encoder continuity -------------------------------------------------------------------


def test_assign_encoders_keeps_the_big_group_on_its_encoder() -> None:
    quiet = ()
    talk_a = (("a", 1.0),)
    # tick 1: nobody talks, all five on encoder 1
    t1 = assign_encoders({quiet: list("abcde")}, {}, itertools.count(1))
    assert t1 == {quiet: 1}
    prev = dict.fromkeys("abcde", 1)
    # tick 2: a talks; b..e hear a and keep encoder 1, a moves to a fresh one
    fresh = itertools.count(2)
    t2 = assign_encoders({talk_a: list("bcde"), quiet: ["a"]}, prev, fresh)
    assert t2[talk_a] == 1 and t2[quiet] == 2
    # tick 3: a stops; the four still have 1, a had 2: the merged group keeps 1
    prev = {"a": 2, **dict.fromkeys("bcde", 1)}
    t3 = assign_encoders({quiet: list("abcde")}, prev, fresh)
    assert t3 == {quiet: 1}


def test_assign_encoders_never_shares_an_encoder_between_recipes() -> None:
    prev = dict.fromkeys("abcd", 7)
    groups = {(("x", 1.0),): ["a", "b"], (("y", 1.0),): ["c", "d"]}
    out = assign_encoders(groups, prev, itertools.count(8))
    assert sorted(out.values()) == [7, 8]


# --- levels and speaking -------------------------------------------------------------------


def sine(amplitude: float, n: int = FRAME_SAMPLES) -> np.ndarray:
    t = np.arange(n) / 48_000
    return (np.sin(2 * np.pi * 440 * t) * amplitude * 32_767).astype(np.int16)


def test_levels_vectorised() -> None:
    frames = np.stack([sine(1.0), sine(0.1), np.zeros(FRAME_SAMPLES, np.int16), const(-32768)])
    lv = levels_dbov(frames)
    assert lv[0] == pytest.approx(-3.01, abs=0.05)  # full-scale sine: RMS is 1/sqrt(2)
    assert lv[1] == pytest.approx(-23.01, abs=0.05)
    assert lv[2] == MIN_DBOV
    assert lv[3] == pytest.approx(0.0, abs=0.01)


# (time s, level dBov) -> expected event types; thresholds: start -50, stop -60,
# hangover 0.5 s, at most one event per 0.3 s.
SPEAKING_CASES = [
    ("onset is immediate", [(0.0, -30)], ["speaking"]),
    ("quiet never starts", [(0.0, -55), (0.02, -55)], []),
    (
        "between thresholds keeps speaking (hysteresis)",
        [(0.0, -30), (0.3, -55), (0.6, -55), (0.9, -55)],
        ["speaking"],
    ),
    ("silence within hangover", [(0.0, -30), (0.1, -90), (0.45, -90)], ["speaking"]),
    (
        "stops after hangover",
        [(0.0, -30), (0.1, -90), (0.7, -90)],
        ["speaking", "stopped_speaking"],
    ),
    (
        "pauses between words do not toggle",
        [(0.0, -30), (0.2, -90), (0.4, -30), (0.6, -90), (0.8, -30)],
        ["speaking"],
    ),
    (
        "flapping is rate limited",
        # start, stop after hangover at 0.62, restart at 0.64 is within 0.3 s of the
        # last event: reported only at 0.95 when the interval has passed
        [(0.0, -30), (0.12, -90), (0.62, -90), (0.64, -30), (0.7, -30), (0.95, -30)],
        ["speaking", "stopped_speaking", "speaking"],
    ),
]


@pytest.mark.parametrize(
    ("name", "steps", "expected"), SPEAKING_CASES, ids=[c[0] for c in SPEAKING_CASES]
)
def test_speaking_hysteresis(
    name: str, steps: list[tuple[float, float]], expected: list[str]
) -> None:
    det = SpeakingDetector()
    got = []
    for now, level in steps:
        got += [e["type"] for e in det.update(now, {"p": level})]
    assert got == expected


def test_speaking_events_at_most_a_few_per_second() -> None:
    det = SpeakingDetector(hangover_s=0.0)
    events = []
    for i in range(500):  # 10 s of a level flipping every tick
        events += det.update(i * 0.02, {"p": -30 if i % 2 else -90})
    assert len(events) <= 10 / det.min_event_interval_s + 1


def test_gate_opens_on_first_loud_frame_and_forget_sends_final_stop() -> None:
    det = SpeakingDetector()
    det.update(0.0, {"p": -90, "q": -20})
    assert det.active() == {"q"}
    assert det.forget(["q", "p"]) == [{"type": "stopped_speaking", "participant_id": "q"}]


def test_a_late_joiner_told_the_snapshot_ends_up_where_the_events_do() -> None:
    """Snapshot at join + later events == what everyone else was told, whenever one joins.

    The case that matters: the gate closes and reopens within the rate limit,
    so no event is sent; a joiner shown the gate's momentary "silent" would
    never learn that the speaker is speaking.
    """
    rng = np.random.default_rng(7)
    det = SpeakingDetector(hangover_s=0.04)
    levels = rng.choice([-90.0, -30.0], size=400, p=[0.3, 0.7])
    joiners: list[set[str]] = []  # each joiner's view of who is speaking
    for i, level in enumerate(levels):
        for event in det.update(i * 0.02, {"p": float(level)}):
            for view in joiners:
                (view.add if event["type"] == "speaking" else view.discard)(event["participant_id"])
        joiners.append(set(det.reported()))
        assert all(view == det.reported() for view in joiners)
    # Quiet ticks after the last level: events catch up with the gate.
    for i in range(len(levels), len(levels) + 50):
        for event in det.update(i * 0.02, {"p": -30.0}):
            for view in joiners:
                (view.add if event["type"] == "speaking" else view.discard)(event["participant_id"])
    assert det.active() == {"p"}
    assert all(view == {"p"} for view in joiners)


# --- ducking ---------------------------------------------------------------------------------


def run_ducker(ducker: Ducker, pattern: list[bool]) -> np.ndarray:
    return np.concatenate([ducker.gains(speaking) for speaking in pattern])


def test_ducking_reaches_target_and_recovers() -> None:
    d = Ducker(duck_db=-12.0)
    g = run_ducker(d, [True] * 10)
    assert g[-1] == pytest.approx(db_to_gain(-12.0), abs=1e-6)
    assert g[0] < 1.0  # starts moving on the first frame
    g = run_ducker(d, [False] * 30)
    assert g[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("duck_db", [-6.0, -12.0, -24.0, -60.0])
def test_ducking_ramps_have_no_clicks(duck_db: float) -> None:
    d = Ducker(duck_db=duck_db)
    pattern = [True] * 3 + [False] * 2 + [True] * 20 + [False] * 40 + [True, False] * 10
    g = np.concatenate([[1.0], run_ducker(d, pattern)])
    steps = np.abs(np.diff(g))
    assert steps.max() <= d.max_step * 1.0001
    # 1.0 -> 0.25 takes at least 50 ms: no jump a listener would hear as a click
    assert d.max_step <= 1.0 / (0.05 * 48_000)
    assert g.min() >= db_to_gain(duck_db) - 1e-6 and g.max() <= 1.0 + 1e-6


def test_ducking_applied_to_bed() -> None:
    d = Ducker(duck_db=-12.0)
    bed = np.full(FRAME_SAMPLES, 10_000, dtype=np.int32)
    assert d.apply(bed, anyone_speaking=False) is bed  # unity: untouched
    for _ in range(10):
        out = d.apply(bed, anyone_speaking=True)
    assert int(out[-1]) == pytest.approx(10_000 * db_to_gain(-12.0), abs=1)


def test_gain_ramp_bounded_both_ways() -> None:
    r = GainRamp(down_step=0.001, up_step=0.0005)
    down = r.next_frame(0.0)
    assert down[-1] == pytest.approx(0.04) and np.all(np.diff(down) < 0)
    up = r.next_frame(1.0)
    assert up[-1] == pytest.approx(0.52)


def test_fade_is_click_free() -> None:
    loud = const(30_000)
    out = fade(loud, 1.0, 0.0)
    assert out[-1] == 0
    assert np.abs(np.diff(out.astype(np.int32))).max() <= 32


# --- jitter slot and offer text --------------------------------------------------------------


def test_jitter_slot_rechunks_and_bounds_latency() -> None:
    slot = JitterSlot(max_frames=3)
    assert slot.pop() is None
    slot.push(np.arange(480, dtype=np.int16))  # 10 ms packets are re-chunked
    assert slot.pop() is None
    slot.push(np.arange(480, 960, dtype=np.int16))
    assert np.array_equal(slot.pop(), np.arange(960, dtype=np.int16))
    for i in range(5):  # a burst of 5: the oldest 2 are dropped
        slot.push(const(i))
    assert slot.dropped_frames == 2 and len(slot) == 3
    assert slot.pop()[0] == 2


def test_jitter_slot_tells_when_each_popped_frame_became_complete() -> None:
    slot = JitterSlot(max_frames=3)
    slot.push(np.zeros(480, dtype=np.int16), at=1.0)  # half a frame ...
    assert slot.pop() is None and slot.ready_at is None
    slot.push(np.zeros(480, dtype=np.int16), at=1.5)  # ... completed here
    slot.push(const(7), at=2.0)
    assert slot.pop() is not None and slot.ready_at == 1.5
    assert slot.pop() is not None and slot.ready_at == 2.0
    for i in range(5):  # a burst of 5 drops the oldest 2, and their times with them
        slot.push(const(i), at=10.0 + i)
    assert [(slot.pop() is not None, slot.ready_at) for _ in range(4)] == [
        (True, 12.0), (True, 13.0), (True, 14.0), (False, None)
    ]


@pytest.mark.parametrize(
    "sdp",
    [
        "",
        "hello",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        None,
        42,
    ],
)
def test_offer_text_rejected(sdp: object) -> None:
    from common.errors import BadRequest

    with pytest.raises(BadRequest):
        check_offer_text(sdp)


def test_jitter_slot_sheds_standing_latency() -> None:
    slot = JitterSlot(max_frames=3)
    slot.push(const(0))
    slot.push(const(1))  # a burst left two extra frames queued
    for i in range(2, 2 + 2 * JitterSlot.ADAPT_TICKS):
        slot.push(const(i))  # steady state: one in, one out per tick
        assert slot.pop() is not None
    # one standing frame shed per second of never running dry
    assert len(slot) == 0 and slot.dropped_frames == 2
    for i in range(JitterSlot.ADAPT_TICKS * 2):  # a slot that runs dry keeps everything
        if i % 2:
            slot.push(const(i))
        slot.pop()
    assert slot.dropped_frames == 2


def test_announce_public_ip_adds_srflx_per_host_candidate() -> None:
    from sfu.ice import announce_public_ip

    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:abc 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
        "a=candidate:def 1 udp 1694498815 198.51.100.7 40000 typ srflx"
        " raddr 10.0.0.5 rport 40000\r\n"
    )
    out = announce_public_ip(sdp, "203.0.113.9")
    added = [line for line in out.splitlines() if "203.0.113.9" in line]
    assert added == [
        "a=candidate:abcn 1 udp 1694498815 203.0.113.9 40000 typ srflx raddr 10.0.0.5 rport 40000"
    ]
    assert announce_public_ip(sdp, None) == sdp


def test_rtc_configuration_never_adds_a_public_stun_server() -> None:
    from sfu.ice import rtc_configuration

    assert rtc_configuration().iceServers == []  # never aiortc's default public STUN
    assert [s.urls for s in rtc_configuration(["stun:stun.example:3478"]).iceServers] == [
        ["stun:stun.example:3478"]
    ]
