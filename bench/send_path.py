"""The send path alone: server CPU per packet out, fast path beside aiortc's sender loop.

    .venv/bin/python -m bench.send_path [--listeners 40] [--seconds 5] [--rounds 2]

Real aiortc peers on 127.0.0.1. This process holds ``--listeners`` server
``sfu.peer.Peer`` s; a child process holds their receive-only aiortc clients
(packets go to a no-op sink through ``aiortc_compat.take_rtp``), so the CPU
measured here is the server's alone. A 20 ms clock hands the same Opus
payload to every peer (``Peer.send``, as the room does for the listeners of
one mix). The two variants (``fast_send`` True: ``sfu.outbound``; False:
aiortc's ``RTCRtpSender`` coroutine per listener) alternate ``--rounds``
times; each prints this process's CPU per packet sent, and the CPU spent
inside the tick's send loop. Quote the ratio: this machine is shared, and
absolute figures drift with its load.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from multiprocessing.connection import Connection

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from protocol import aiortc_compat
from protocol.opus import Encoder
from sfu.mixer import FRAME_SAMPLES
from sfu.peer import Peer

FRAME_S = 0.02
CONNECT_TIMEOUT_S = 60.0


def _clients(listeners: int, pipe: Connection) -> None:
    """The child: ``listeners`` receive-only clients per request, until told to stop."""

    async def main() -> None:
        aiortc_compat.install()
        aiortc_compat.set_host_addresses(["127.0.0.1"])
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "stop":
                return
            pcs = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(listeners)]
            for pc in pcs:
                pc.addTransceiver("audio", direction="recvonly")
                await pc.setLocalDescription(await pc.createOffer())
                (t,) = pc.getTransceivers()
                aiortc_compat.take_rtp(t.receiver, lambda p, m: None)
            pipe.send([pc.localDescription.sdp for pc in pcs])
            answers = await loop.run_in_executor(None, pipe.recv)
            for pc, sdp in zip(pcs, answers, strict=True):
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            await loop.run_in_executor(None, pipe.recv)  # "close"
            await asyncio.gather(*(pc.close() for pc in pcs))
            pipe.send("closed")

    asyncio.run(main())


async def measure(fast: bool, listeners: int, seconds: float, pipe: Connection
                  ) -> tuple[float, float]:
    """(this process's CPU us per packet, CPU us per packet inside the send loop)."""
    loop = asyncio.get_running_loop()
    pipe.send("open")
    offers = await loop.run_in_executor(None, pipe.recv)
    peers = [Peer(f"l{i}", on_state=lambda p, s: None, fast_send=fast)
             for i in range(listeners)]
    answers = [await peer.answer(offer) for peer, offer in zip(peers, offers, strict=True)]
    pipe.send(answers)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not all(p.state == "connected" and (not fast or (
            p.outbound is not None and p.outbound.ready)) for p in peers):
        if time.monotonic() > deadline:
            raise TimeoutError("the listeners did not connect")
        await asyncio.sleep(0.05)
    n = np.arange(FRAME_SAMPLES * 5)
    tone = (np.sin(2 * np.pi * 440 * n / 48_000) * 8000).astype(np.int16)
    encoder = Encoder(32_000)
    payload = b""
    for k in range(5):  # a voice-sized payload (32 kbps: ~80 bytes)
        payload = encoder.encode(tone[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES])
    await asyncio.sleep(1.0)  # let the connections settle
    ticks = round(seconds / FRAME_S)
    in_loop = 0.0
    cpu0 = time.process_time()
    start = loop.time()
    for tick in range(ticks):
        await asyncio.sleep(max(0.0, start + tick * FRAME_S - loop.time()))
        t0 = time.thread_time()
        for peer in peers:
            peer.send(payload)
        in_loop += time.thread_time() - t0
    await asyncio.sleep(0.1)  # the last tick's packets leave (aiortc's coroutines)
    cpu = time.process_time() - cpu0
    sent = ticks * listeners
    pipe.send("close")
    await asyncio.gather(*(p.close() for p in peers))
    await loop.run_in_executor(None, pipe.recv)
    return cpu / sent * 1e6, in_loop / sent * 1e6


async def main_async(listeners: int, seconds: float, rounds: int, pipe: Connection) -> None:
    aiortc_compat.install()
    aiortc_compat.set_host_addresses(["127.0.0.1"])
    print(f"{listeners} listeners, {seconds:g} s a variant, {rounds} rounds; "
          "server CPU only (clients in another process)")
    print(f"{'round':>5}{'variant':>10}{'CPU us/packet':>15}{'send loop us/packet':>21}")
    results: dict[bool, list[float]] = {True: [], False: []}
    for k in range(rounds):
        for fast in (False, True):
            total, loop_us = await measure(fast, listeners, seconds, pipe)
            results[fast].append(total)
            name = "fast" if fast else "aiortc"
            print(f"{k + 1:>5}{name:>10}{total:>15.1f}{loop_us:>21.1f}", flush=True)
    ratios = sorted(f / a for f, a in zip(results[True], results[False], strict=True))
    print(f"fast / aiortc server CPU per packet (median of rounds): "
          f"{ratios[len(ratios) // 2]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.listeners < 1 or args.seconds <= 0 or args.rounds < 1:
        raise SystemExit("--listeners, --seconds and --rounds must be positive")
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_clients, args=(args.listeners, there), daemon=True)
    child.start()
    try:
        asyncio.run(main_async(args.listeners, args.seconds, args.rounds, here))
    finally:
        here.send("stop")
        child.join(10)


if __name__ == "__main__":
    main()
