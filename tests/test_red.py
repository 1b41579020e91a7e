"""RFC 2198 RED: parsing Chrome's packets, building, recovering lost primaries."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.opus import FRAME_SAMPLES, Decoder, Encoder
from protocol.red import RedBlock, RedError, RedPacketizer, build_red, parse_red, push_red
from protocol.reorder import FRAME_TS, Frame, ReorderBuffer

OPUS_PT = 111  # what Chrome numbers Opus; RED is 63 there

# One RED payload as Chrome sends Opus: a 4-byte header for the previous frame
# (F=1, PT=111, offset 960 ticks = 20 ms, 5 bytes), a 1-byte primary header
# (F=0, PT=111), then the previous frame's bytes and the primary's.
CHROME_RED = bytes.fromhex("ef0f0005" "6f") + b"\x78prev" + b"\x78primary"


def test_parse_chrome_red() -> None:
    red = parse_red(CHROME_RED)
    assert red.redundant == (RedBlock(OPUS_PT, 960, b"\x78prev"),)
    assert (red.primary_pt, red.primary) == (OPUS_PT, b"\x78primary")


def test_first_packet_has_the_primary_only() -> None:
    red = parse_red(bytes([OPUS_PT]) + b"\x78only")
    assert red.redundant == () and red.primary == b"\x78only"


def test_build_round_trip_and_matches_chrome() -> None:
    assert build_red(OPUS_PT, b"\x78primary", (RedBlock(OPUS_PT, 960, b"\x78prev"),)) == CHROME_RED
    blocks = (RedBlock(OPUS_PT, 1920, b"a" * 1023), RedBlock(OPUS_PT, 960, b""))
    red = parse_red(build_red(OPUS_PT, b"p", blocks))
    assert red.redundant == blocks and red.primary == b"p"


@pytest.mark.parametrize(("data", "match"), [
    (b"", "headers"),
    (bytes.fromhex("ef0f00"), "cut short"),
    (bytes.fromhex("ef0f0005"), "headers"),
    (bytes.fromhex("ef0f0005" "6f") + b"abc", "past the end"),
])
def test_malformed_red_is_a_clear_error(data: bytes, match: str) -> None:
    with pytest.raises(RedError, match=match):
        parse_red(data)


@pytest.mark.parametrize("block", [
    RedBlock(128, 960, b"x"), RedBlock(OPUS_PT, 1 << 14, b"x"), RedBlock(OPUS_PT, 960, b"x" * 1024),
])
def test_unbuildable_blocks_are_refused(block: RedBlock) -> None:
    with pytest.raises(RedError):
        build_red(OPUS_PT, b"p", (block,))


def test_lost_primary_is_recovered_from_the_next_packets_redundancy() -> None:
    enc = Encoder(32_000)
    t = np.arange(12 * FRAME_SAMPLES) / 48_000
    pcm = (6_000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    opus = [enc.encode(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(12)]
    sender = RedPacketizer(OPUS_PT, distance=1)
    base_seq, base_ts = 65_530, 2**32 - 3 * FRAME_TS  # both wrap during the test
    packets = [((base_seq + i) % 65_536, (base_ts + i * FRAME_TS) % 2**32,
                sender.wrap(p, (base_ts + i * FRAME_TS) % 2**32)) for i, p in enumerate(opus)]
    assert parse_red(packets[0][2]).redundant == ()
    assert parse_red(packets[5][2]).redundant == (RedBlock(OPUS_PT, FRAME_TS, opus[4]),)

    lost = 6  # seq 0 after the wrap
    buf = ReorderBuffer()
    filled = 0
    for i, (seq, ts, data) in enumerate(packets):
        if i != lost:
            filled += push_red(buf, seq, ts, data, i * 0.02, opus_pt=OPUS_PT)
    assert filled == 1
    played = [buf.pop(0.3 + i * 0.02) for i in range(12)]
    assert all(isinstance(p, Frame) for p in played)
    payloads = [p.payload for p in played if isinstance(p, Frame)]
    assert payloads == opus  # the lost one comes back bit-exact, not concealed
    c = buf.counters
    assert (c.lost, c.red_recovered, c.concealed, c.duplicate) == (0, 1, 0, 0)
    dec = Decoder()
    assert all(dec.decode(p).shape == (FRAME_SAMPLES,) for p in payloads)


def test_other_payload_types_and_odd_offsets_are_skipped() -> None:
    buf = ReorderBuffer()
    data = build_red(OPUS_PT, b"\x78prim", (RedBlock(0, 1920, b"\x78pcmu"),
                                             RedBlock(OPUS_PT, 500, b"\x78odd")))
    assert push_red(buf, 10, 10 * FRAME_TS, data, 0.0, opus_pt=OPUS_PT) == 0
    assert len(buf) == 1
    with pytest.raises(RedError):
        push_red(buf, 11, 11 * FRAME_TS, b"\xef", 0.0)
    assert len(buf) == 1


def test_packetizer_skips_dtx_and_respects_distance() -> None:
    sender = RedPacketizer(OPUS_PT, distance=2)
    sender.wrap(b"\x78one", 0)
    sender.wrap(b"\x08", 960)  # DTX marker: not repeated
    red = parse_red(sender.wrap(b"\x78three", 1920))
    assert red.redundant == (RedBlock(OPUS_PT, 1920, b"\x78one"),)
    red = parse_red(sender.wrap(b"\x78four", 2880))
    assert [b.ts_offset for b in red.redundant] == [2880, 960]
    assert parse_red(RedPacketizer(OPUS_PT, distance=0).wrap(b"x", 0)).redundant == ()


def _red_stream(n: int, distance: int) -> list[tuple[int, int, bytes]]:
    sender = RedPacketizer(OPUS_PT, distance=distance)
    return [(i, i * FRAME_TS, sender.wrap(b"\x78frame%d" % i, i * FRAME_TS)) for i in range(n)]


@pytest.mark.parametrize(("distance", "lost", "depth"), [
    (1, {10}, 2),          # Chrome's RED: the copy is one frame later
    (2, {10}, 3),          # Disco's: copies two frames back, in time only three deep
    (2, {10, 11}, 3),
])
def test_a_hole_filled_by_red_keeps_the_buffer_deep_enough_for_the_copies(
    distance: int, lost: set[int], depth: int
) -> None:
    """A buffer at one frame (the server's start, or a listener on a calm link) would
    underrun at each loss and play the copy a frame late, inside a word: once a copy
    fills a hole, the depth holds at the RED distance plus one (as a loss holds it)."""
    buf = ReorderBuffer(initial_depth_frames=1)
    out = []
    for k, (seq, ts, data) in enumerate(_red_stream(40, distance)):
        if seq not in lost:
            push_red(buf, seq, ts, data, k * 0.02, opus_pt=OPUS_PT)
        out.append(buf.pop(k * 0.02 + 0.001))
    assert buf.target_frames == depth
    assert buf.counters.red_recovered == len(lost)
    # The first loss came with one frame buffered: the copy is late once (an underrun),
    # the depth grows, and later the same loss is repaired in time.
    buf2 = ReorderBuffer(initial_depth_frames=1)
    conceals_after = 0
    for k, (seq, ts, data) in enumerate(_red_stream(60, distance)):
        if seq not in lost and seq - 30 not in lost:
            push_red(buf2, seq, ts, data, k * 0.02, opus_pt=OPUS_PT)
        action = buf2.pop(k * 0.02 + 0.001)
        conceals_after += k > 35 and not isinstance(action, Frame)
    assert conceals_after == 0
    assert buf2.counters.red_recovered == 2 * len(lost)
