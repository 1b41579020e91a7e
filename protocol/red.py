"""RFC 2198 redundant audio (RED, ``red/48000/2``): parse, build, and recover.

A RED payload is a list of block headers then the blocks themselves, oldest
first, the primary (the packet's own frame) last::

    redundant header (4 bytes): F=1 | block PT (7) | timestamp offset (14) | length (10)
    primary header   (1 byte):  F=0 | block PT (7)

Chrome sends Opus in RED with one earlier frame (offset 960 at 48 kHz, 20 ms)
and the primary; the first packet of a stream (or one after DTX) carries the
primary alone. LiveKit turns RED on by default; it is cheap insurance against
single losses on top of Opus FEC, because the copy is full quality.

``push_red`` feeds one RED packet into a ``protocol.reorder.ReorderBuffer``: the
primary as the packet itself, each earlier frame as a ``redundant`` copy for
the sequence number it stood for, which fills the hole if that packet was lost
and is ignored otherwise. ``RedPacketizer`` builds the outbound side for a
listener who offered RED. Pure: no I/O, no clock.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from protocol.reorder import FRAME_TS, SEQ_MOD, ReorderBuffer

RED_CLOCK_HZ = 48_000
MAX_TS_OFFSET = (1 << 14) - 1
"""14 bits of RTP ticks: 341 ms at 48 kHz."""
MAX_BLOCK_BYTES = (1 << 10) - 1
"""10 bits of length: a redundant block is at most 1023 bytes."""
MAX_PT = 127
DEFAULT_DISTANCE = 1
"""Earlier frames repeated in each packet (Chrome's default)."""


class RedError(ValueError):
    """A RED payload that does not parse (truncated headers, lengths past the end)."""


@dataclass(frozen=True, slots=True)
class RedBlock:
    pt: int
    ts_offset: int
    """How many RTP ticks before the packet's timestamp this block's frame starts."""
    payload: bytes


@dataclass(frozen=True, slots=True)
class RedPayload:
    redundant: tuple[RedBlock, ...]
    """Oldest first, as in the packet."""
    primary_pt: int
    primary: bytes


def parse_red(data: bytes) -> RedPayload:
    """Split one RED payload into its redundant blocks and primary; RedError if malformed."""
    headers: list[tuple[int, int, int]] = []
    pos = 0
    while True:
        if pos >= len(data):
            raise RedError(f"RED payload ends inside its headers ({len(data)} bytes)")
        first = data[pos]
        if not first & 0x80:
            primary_pt = first & 0x7F
            pos += 1
            break
        if pos + 4 > len(data):
            raise RedError(f"RED header at byte {pos} is cut short ({len(data)} bytes)")
        word = int.from_bytes(data[pos : pos + 4], "big")
        headers.append(((word >> 24) & 0x7F, (word >> 10) & 0x3FFF, word & 0x3FF))
        pos += 4
    blocks = []
    for pt, offset, length in headers:
        if pos + length > len(data):
            raise RedError(f"RED block of {length} bytes at byte {pos} runs past the end "
                           f"({len(data)} bytes)")
        blocks.append(RedBlock(pt, offset, bytes(data[pos : pos + length])))
        pos += length
    return RedPayload(tuple(blocks), primary_pt, bytes(data[pos:]))


def build_red(primary_pt: int, primary: bytes, redundant: tuple[RedBlock, ...] = ()) -> bytes:
    """One RED payload: ``redundant`` (oldest first) then the primary."""
    out = bytearray()
    for block in redundant:
        if not 0 <= block.pt <= MAX_PT:
            raise RedError(f"payload type must be 0..127, got {block.pt}")
        if not 0 <= block.ts_offset <= MAX_TS_OFFSET:
            raise RedError(f"timestamp offset must be 0..{MAX_TS_OFFSET}, got {block.ts_offset}")
        if len(block.payload) > MAX_BLOCK_BYTES:
            raise RedError(f"a redundant block is at most {MAX_BLOCK_BYTES} bytes, "
                           f"got {len(block.payload)}")
        word = (1 << 31) | (block.pt << 24) | (block.ts_offset << 10) | len(block.payload)
        out += word.to_bytes(4, "big")
    if not 0 <= primary_pt <= MAX_PT:
        raise RedError(f"payload type must be 0..127, got {primary_pt}")
    out.append(primary_pt)
    for block in redundant:
        out += block.payload
    out += primary
    return bytes(out)


def push_red(buffer: ReorderBuffer, seq: int, timestamp: int, data: bytes, now: float, *,
             opus_pt: int | None = None, frame_ts: int = FRAME_TS) -> int:
    """Feed one RED packet: its primary as the packet, earlier frames as hole fillers.

    A redundant block ``k`` frames back (offset ``k * frame_ts``) stands for
    sequence number ``seq - k``: senders repeat consecutive frames. Blocks of
    another payload type than ``opus_pt`` (when given), empty blocks and
    offsets that are not whole frames are skipped. Returns how many copies
    filled a hole. When one did, the buffer keeps enough depth for the copies of
    this packet's distance to come in time (``ReorderBuffer.hold_depth``: the
    deepest block's frames back, plus one). Raises RedError on a malformed
    payload (nothing is pushed).
    """
    red = parse_red(data)
    if red.primary and (opus_pt is None or red.primary_pt == opus_pt):
        buffer.push(seq, timestamp, red.primary, now)
    filled = 0
    deepest = 0
    for block in red.redundant:
        if not block.payload or (opus_pt is not None and block.pt != opus_pt):
            continue
        frames_back, rest = divmod(block.ts_offset, frame_ts)
        if rest or frames_back == 0:
            continue
        deepest = max(deepest, frames_back)
        filled += buffer.push((seq - frames_back) % SEQ_MOD,
                              (timestamp - block.ts_offset) % (1 << 32),
                              block.payload, now, redundant=True)
    if filled:
        buffer.hold_depth(deepest + 1)
    return filled


class RedPacketizer:
    """Outbound RED for one listener: each payload goes out with the ``distance`` before it.

    Frames that would not fit a RED header (offset over 14 bits, block over
    1023 bytes) are left out rather than failing the packet. An empty or DTX
    payload (at most 2 bytes) is not worth repeating and is not kept.
    """

    def __init__(self, pt: int, distance: int = DEFAULT_DISTANCE) -> None:
        if not 0 <= pt <= MAX_PT:
            raise RedError(f"payload type must be 0..127, got {pt}")
        if distance < 0:
            raise RedError("distance must be >= 0")
        self._pt = pt
        self._history: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=distance)
        self._distance = distance

    def wrap(self, payload: bytes, timestamp: int) -> bytes:
        """The RED payload for one frame with RTP ``timestamp``."""
        blocks = []
        for ts, old in self._history:
            offset = (timestamp - ts) % (1 << 32)
            if 0 < offset <= MAX_TS_OFFSET and len(old) <= MAX_BLOCK_BYTES:
                blocks.append(RedBlock(self._pt, offset, old))
        out = build_red(self._pt, payload, tuple(blocks))
        if self._distance and len(payload) > 2:
            self._history.append((timestamp % (1 << 32), payload))
        return out
