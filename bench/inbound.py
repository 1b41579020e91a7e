"""The server's inbound work for a room, without the network: top-N beside decode-all.

    .venv/bin/python -m bench.inbound [--sizes 40,200] [--seconds 10] [--rounds 2]

One ``MediaRoom`` on a virtual clock with N participants whose peers are
in-process stand-ins (no aiortc): every 20 ms each participant's Opus packet
(with its RFC 6464 level, as browsers send it) goes into its
``InboundStream`` as ``sfu.peer`` would hand it over, then ``tick(now)``
runs (select, decode, levels, speaking, mix, encode). 3 talkers take turns
(tone bursts, one at a time), the rest are silent: with ``dtx`` a silent
sender sends one TOC-only packet per 400 ms, without it a silent Opus frame
every 20 ms. The process's CPU time over the run, per second of audio, is the
share of a core this work takes; "decode all" is the same room with top-N
set above N (every sender decoded every tick, as before issue #15), run
alternately in the same process so the machine's load hits both. The
network side (SRTP, sockets, aiortc) is ``bench.receive``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from protocol.aiortc_compat import ReceiverReport
from protocol.opus import Encoder
from protocol.playout import UplinkStats
from sfu.inbound import InboundStream
from sfu.room import MediaConfig, MediaRoom, PeerStateCallback

FRAME_S = 0.02
TALKERS = 3
SLOT_TICKS = 15
BURST_TICKS = 8
DTX_REFRESH_TICKS = 20


class _Peer:
    """A participant as the room sees it, fed by the bench instead of aiortc."""

    def __init__(self, pid: str) -> None:
        self.participant_id = pid
        self.voice = InboundStream(pid)
        self.music: Mapping[str, InboundStream] = {}
        self.listening = True
        self.sent = 0

    def send(self, payload: bytes) -> None:
        self.sent += 1

    def skip(self, frames: int) -> None: ...

    def last_heard(self) -> float | None:
        return None

    def take_reports(self) -> list[ReceiverReport]:
        return []

    def take_uplink(self) -> UplinkStats | None:
        return None

    def fail(self) -> None: ...

    def detach(self) -> None: ...

    async def answer(self, offer_sdp: str) -> str:
        return ""

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None: ...

    async def close(self) -> None: ...


def _packets() -> tuple[list[bytes], bytes, bytes]:
    """A second of a talker's tone, a silent frame, and a DTX packet (libopus's own)."""
    enc = Encoder(32_000)
    t = np.arange(50 * 960) / 48_000
    pcm = (0.25 * 32_767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    tone = [enc.encode(pcm[i * 960:(i + 1) * 960]) for i in range(50)]
    silent = Encoder(32_000).encode(np.zeros(960, dtype=np.int16))
    dtx_enc = Encoder(32_000, dtx=True)
    dtx = b""
    for _ in range(50):
        dtx = dtx_enc.encode(np.zeros(960, dtype=np.int16))
        if len(dtx) <= 2:
            break
    return tone, silent, dtx


def run(n: int, seconds: float, top_n: int, dtx: bool) -> tuple[float, float]:
    """(share of a core, encodes per tick) for one room of ``n``."""
    tone, silent, dtx_packet = _packets()
    peers: dict[str, _Peer] = {}

    def make(pid: str, mids: Collection[str], on_state: PeerStateCallback) -> Any:
        peers[pid] = _Peer(pid)
        return peers[pid]

    room = MediaRoom("bench", MediaConfig(top_n=top_n), lambda e: None, peer_factory=make)

    async def join() -> None:
        for i in range(n):
            await room.connect(f"p{i}", "")

    asyncio.run(join())
    ids = list(peers)
    seqs = dict.fromkeys(ids, 0)
    ticks = round(seconds / FRAME_S)
    encodes = 0
    cpu0 = time.process_time()
    for k in range(ticks):
        now = k * FRAME_S
        talking = (k // SLOT_TICKS) % TALKERS if k % SLOT_TICKS < BURST_TICKS else None
        for i, pid in enumerate(ids):
            on = i == talking
            silent_for = k % (SLOT_TICKS * TALKERS)  # ticks since this cycle began
            if on:
                payload, level = tone[k % len(tone)], 15
            elif dtx:
                if i >= TALKERS and k % DTX_REFRESH_TICKS != 0:
                    continue
                if i < TALKERS and silent_for % DTX_REFRESH_TICKS != BURST_TICKS % 20:
                    continue
                payload, level = dtx_packet, 127
            else:
                payload, level = silent, 127
            peers[pid].voice.packet(seqs[pid] % 65_536, (k * 960) % (1 << 32), payload, now,
                                    level=level)
            seqs[pid] += 1
        encodes += room.tick(now).encodes
    cpu = time.process_time() - cpu0
    return cpu / seconds, encodes / ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="40,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top-n", type=int, default=3)
    args = parser.parse_args()
    print(f"{'N':>5}{'DTX':>5}{'round':>7}{'decode all':>12}{'top-N':>9}{'top-N/all':>11}"
          f"{'encodes/tick':>14}")
    for n in (int(x) for x in args.sizes.split(",")):
        for dtx in (False, True):
            ratios = []
            for k in range(args.rounds):
                everyone, _ = run(n, args.seconds, n + 1, dtx)
                top, enc = run(n, args.seconds, args.top_n, dtx)
                ratios.append(top / everyone)
                print(f"{n:>5}{'on' if dtx else 'off':>5}{k + 1:>7}{everyone * 100:>11.1f}%"
                      f"{top * 100:>8.1f}%{top / everyone:>11.2f}{enc:>14.1f}", flush=True)
            ratios.sort()
            print(f"{n:>5}{'on' if dtx else 'off':>5} median top-N/all: "
                  f"{ratios[len(ratios) // 2]:.2f}")


if __name__ == "__main__":
    main()
