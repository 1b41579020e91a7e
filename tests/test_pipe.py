"""Voice piped between nodes (``sfu.pipe``): the frame format and the playing source. Pure."""

from __future__ import annotations

import numpy as np
import pytest

from sfu.errors import BadPipedFrame
from sfu.mixer import FRAME_SAMPLES
from sfu.pipe import (
    CALM_TICKS,
    PREBUFFER_MAX_FRAMES,
    PREBUFFER_MIN_FRAMES,
    QUEUE_SLACK_FRAMES,
    PipedSource,
    pack_frame,
    unpack_frame,
    unpack_frames,
)


def frame(value: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


def test_a_frame_survives_the_round_trip() -> None:
    pcm = (np.arange(FRAME_SAMPLES) * 37 % 65_536 - 32_768).astype(np.int16)
    got = unpack_frame(pack_frame("p_0123456789ab", 2**32 + 5, pcm))
    assert got.speaker == "p_0123456789ab" and got.seq == 5
    assert got.pcm.dtype == np.int16 and np.array_equal(got.pcm, pcm)


def test_one_message_carries_a_tick_of_frames() -> None:
    data = b"".join(pack_frame(f"p_{n}", n, frame(n)) for n in range(3))
    got = unpack_frames(data)
    assert [(f.speaker, f.seq, int(f.pcm[0])) for f in got] == [
        ("p_0", 0, 0), ("p_1", 1, 1), ("p_2", 2, 2)]
    with pytest.raises(BadPipedFrame, match="does not match"):
        unpack_frames(data[:-1])
    with pytest.raises(BadPipedFrame, match="does not match"):
        unpack_frame(data)
    with pytest.raises(BadPipedFrame, match="too short"):
        unpack_frames(b"")


@pytest.mark.parametrize(("data", "message"), [
    (b"", "too short"),
    (b"XX\x01\x00\x00\x00\x01\x01a" + bytes(2 * FRAME_SAMPLES), "not a piped voice frame"),
    (b"DV\x02\x00\x00\x00\x01\x01a" + bytes(2 * FRAME_SAMPLES), "not a piped voice frame"),
    (b"DV\x01\x00\x00\x00\x01\x01a" + bytes(10), "does not match"),
    (b"DV\x01\x00\x00\x00\x01\x00" + bytes(2 * FRAME_SAMPLES), "does not match"),
    (b"DV\x01\x00\x00\x00\x01\x01\xff" + bytes(2 * FRAME_SAMPLES), "not UTF-8"),
])
def test_bad_bytes_get_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(BadPipedFrame, match=message):
        unpack_frame(data)


@pytest.mark.parametrize(("speaker", "samples"), [("", FRAME_SAMPLES), ("x" * 65, FRAME_SAMPLES),
                                                  ("p", 480)])
def test_packing_refuses_what_cannot_be_read_back(speaker: str, samples: int) -> None:
    with pytest.raises(BadPipedFrame):
        pack_frame(speaker, 0, np.zeros(samples, dtype=np.int16))


def played(source: PipedSource, ticks: int) -> list[int | None]:
    out: list[int | None] = []
    for _ in range(ticks):
        pcm = source.pop(0.0)
        out.append(None if pcm is None else int(pcm[0]))
    return out


# Each case: pushes (sequence numbers) before each pop, and what each pop plays.
@pytest.mark.parametrize(("pushes", "expected"), [
    # waits for the prebuffer, then one a tick
    ([[0], [1], [2], [3], []], [None, 0, 1, 2, 3]),
    # duplicates and late frames are ignored
    ([[0, 1], [1, 0], [2], []], [0, 1, 2, None]),
    # ran dry: waits for a prebuffer one frame deeper
    ([[0, 1], [], [], [2], [3], [4], []], [0, 1, None, None, None, 2, 3]),
    # a pause (gap in numbers) closes up
    ([[0, 1], [7], [8], []], [0, 1, 7, 8]),
    # a burst beyond the queue bound loses its oldest frames
    ([list(range(10)), []], [10 - 2 - QUEUE_SLACK_FRAMES, 11 - 2 - QUEUE_SLACK_FRAMES]),
    # the sequence wraps around
    ([[2**32 - 1, 0], [1], []], [2**32 - 1, 0, 1]),
])
def test_the_source_plays_in_order_after_a_prebuffer(
        pushes: list[list[int]], expected: list[int | None]) -> None:
    assert PREBUFFER_MIN_FRAMES == 2  # the table assumes it
    source = PipedSource()
    got: list[int | None] = []
    for batch in pushes:
        for seq in batch:
            source.push(seq, frame(seq % 30_000 if seq < 2**31 else -1), 0.0)
        got.extend(played(source, 1))
    want = [None if e is None else (e % 30_000 if e < 2**31 else -1) for e in expected]
    assert got == want


def test_the_prebuffer_grows_when_the_pipe_runs_dry_and_shrinks_when_calm() -> None:
    source = PipedSource()
    seq = 0
    for _ in range(10):  # a jittery pipe: runs dry again and again
        while source.pop(0.0) is None:
            source.push(seq, frame(1), 0.0)
            seq += 1
        while source.pop(0.0) is not None:
            pass
    assert source.prebuffer == PREBUFFER_MAX_FRAMES and source.underruns == 10
    for _ in range(CALM_TICKS * 2 + 10):  # then steady: one in, one out
        source.push(seq, frame(1), 0.0)
        seq += 1
        source.pop(0.0)
    assert source.prebuffer == PREBUFFER_MAX_FRAMES - 2
