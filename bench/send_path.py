"""The send path alone: CPU per packet out, fast path beside aiortc's sender loop.

    .venv/bin/python -m bench.send_path [--listeners 40] [--seconds 5] [--rounds 2]

One process, real aiortc peers on 127.0.0.1: ``--listeners`` server
``sfu.peer.Peer`` s, each answered for a receive-only aiortc client whose
packets go to a no-op sink (``aiortc_compat.take_rtp``: no decoding, the
same cost for both variants). A 20 ms clock hands the same Opus payload to
every peer (``Peer.send``, as the room does for listeners of one mix). The
two variants (``fast_send`` True: ``sfu.outbound``; False: aiortc's
``RTCRtpSender`` coroutine per listener) alternate ``--rounds`` times; each
prints the process CPU per packet sent (server send + client receive, the
latter the same in both) and the CPU inside the tick's send loop. The ratio
is what to quote: this machine is shared, absolute figures drift.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from protocol import aiortc_compat
from protocol.opus import Encoder
from sfu.mixer import FRAME_SAMPLES
from sfu.peer import Peer

FRAME_S = 0.02
CONNECT_TIMEOUT_S = 30.0


async def connect(fast: bool, index: int) -> tuple[Peer, RTCPeerConnection]:
    peer = Peer(f"l{index}", on_state=lambda p, s: None, fast_send=fast)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("audio", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    answer = await peer.answer(client.localDescription.sdp)
    (transceiver,) = client.getTransceivers()
    aiortc_compat.take_rtp(transceiver.receiver, lambda p, m: None)
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not (peer.state == "connected" and (not fast or (
            peer.outbound is not None and peer.outbound.ready))):
        if time.monotonic() > deadline:
            raise TimeoutError(f"listener {index} did not connect")
        await asyncio.sleep(0.05)
    return peer, client


async def measure(fast: bool, listeners: int, seconds: float) -> tuple[float, float]:
    """(process CPU us per packet, CPU us per packet inside the send loop)."""
    pairs = await asyncio.gather(*(connect(fast, i) for i in range(listeners)))
    peers = [p for p, _ in pairs]
    n = np.arange(FRAME_SAMPLES * 5)
    tone = (np.sin(2 * np.pi * 440 * n / 48_000) * 8000).astype(np.int16)
    encoder = Encoder(32_000)
    for k in range(5):  # a voice-sized payload (32 kbps: ~80 bytes)
        payload = encoder.encode(tone[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES])
    loop = asyncio.get_running_loop()
    await asyncio.sleep(1.0)  # let the connections settle
    ticks = round(seconds / FRAME_S)
    in_loop = 0.0
    cpu0 = time.process_time()
    start = loop.time()
    for n in range(ticks):
        delay = start + n * FRAME_S - loop.time()
        await asyncio.sleep(max(0.0, delay))
        t0 = time.thread_time()
        for peer in peers:
            peer.send(payload)
        in_loop += time.thread_time() - t0
    await asyncio.sleep(0.1)  # the last tick's packets leave (aiortc's coroutines)
    cpu = time.process_time() - cpu0
    sent = ticks * listeners
    await asyncio.gather(*(c.close() for _, c in pairs), *(p.close() for p in peers))
    return cpu / sent * 1e6, in_loop / sent * 1e6


async def main_async(listeners: int, seconds: float, rounds: int) -> None:
    aiortc_compat.install()
    aiortc_compat.set_host_addresses(["127.0.0.1"])
    print(f"{listeners} listeners, {seconds:g} s a variant, {rounds} rounds (same process)")
    print(f"{'round':>5}{'variant':>10}{'CPU us/packet':>15}{'send loop us/packet':>21}")
    results: dict[bool, list[float]] = {True: [], False: []}
    for k in range(rounds):
        for fast in (False, True):
            total, loop_us = await measure(fast, listeners, seconds)
            results[fast].append(total)
            name = "fast" if fast else "aiortc"
            print(f"{k + 1:>5}{name:>10}{total:>15.1f}{loop_us:>21.1f}", flush=True)
    ratios = sorted(f / a for f, a in zip(results[True], results[False], strict=True))
    print(f"fast / aiortc CPU per packet (median of rounds): {ratios[len(ratios) // 2]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.listeners < 1 or args.seconds <= 0 or args.rounds < 1:
        raise SystemExit("--listeners, --seconds and --rounds must be positive")
    asyncio.run(main_async(args.listeners, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
