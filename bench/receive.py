"""The receive path's CPU per packet: aiortc's way beside the fast path, in one run.

    .venv/bin/python -m bench.receive [--packets 6000] [--rate 2000] [--rounds 2] [--uvloop]

A sender process streams Opus-sized RTP packets (with the RFC 6464 level, as
browsers send them) over real SRTP on loopback at ``--rate`` packets/s to a
receiver process, which hands each packet to a sink through
``aiortc_compat.take_rtp``: either aiortc's receive path (aioice's queue, the
ICE and DTLS receive coroutines, ``RtpPacket.parse``, the receiver's
per-packet statistics) or the fast path (SRTP straight from aioice's socket
callback, ``protocol.rtp_parse``, statistics from counters). The receiver's
own CPU time (``time.process_time``) over the packets, divided by their
number, is the cost of receiving one packet, idle loop included; the two are
measured alternately in the same run, so the machine's load hits both.
The receiver runs on asyncio's own loop unless ``--uvloop`` (what ``disco
serve`` runs on: uvicorn picks uvloop when it is installed), where the
loop's share of each packet is about half.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import multiprocessing as mp
import time
from typing import Any

WARMUP_PACKETS = 200
PAYLOAD_BYTES = 80
"""About a 32 kbps Opus frame."""


def _loopback() -> None:
    from protocol import aiortc_compat

    aiortc_compat.install()
    aiortc_compat.set_host_addresses(("127.0.0.1",))


def _sender(offer_q: Any, answer_q: Any, packets: int, rate: float) -> None:
    _loopback()

    async def main() -> None:
        import av
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        from aiortc.mediastreams import MediaStreamTrack

        from protocol import aiortc_compat

        class Paced(MediaStreamTrack):
            kind = "audio"

            def __init__(self) -> None:
                super().__init__()
                self.sent = 0
                self.start: float | None = None

            async def recv(self) -> Any:
                if self.start is None:
                    self.start = time.monotonic()
                wait = self.start + self.sent / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.sent >= packets + WARMUP_PACKETS + 50:
                    await asyncio.sleep(3600)
                packet = av.Packet(bytes([0xF8]) + bytes(PAYLOAD_BYTES - 1))
                packet.pts = self.sent * 960
                packet.time_base = fractions.Fraction(1, 48_000)
                self.sent += 1
                return packet

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        aiortc_compat.send_audio_level(pc.addTrack(Paced()), lambda: -20)
        await pc.setLocalDescription(await pc.createOffer())
        offer_q.put(pc.localDescription.sdp)
        answer = await asyncio.get_running_loop().run_in_executor(None, answer_q.get)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.get_running_loop().run_in_executor(None, answer_q.get)  # done
        await pc.close()

    asyncio.run(main())


def _receive(offer: str, answer_q: Any, packets: int, fast: bool) -> tuple[float, int]:
    """(CPU seconds per packet, packets on the fast path) in this process."""
    _loopback()

    async def main() -> tuple[float, int]:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from protocol import aiortc_compat

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        count = 0
        marks: dict[str, float] = {}
        done = asyncio.Event()

        def sink(rtp: aiortc_compat.InboundRtp, mime: str) -> None:
            nonlocal count
            count += 1
            if count == WARMUP_PACKETS:
                marks["start"] = time.process_time()
            elif count == WARMUP_PACKETS + packets:
                marks["end"] = time.process_time()
                done.set()

        def counters() -> aiortc_compat.ReceiveCounters:
            return aiortc_compat.ReceiveCounters(count, count, 0, count, 0.0)

        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        (transceiver,) = pc.getTransceivers()
        aiortc_compat.take_rtp(transceiver.receiver, sink, counters if fast else None)
        await pc.setLocalDescription(await pc.createAnswer())
        answer_q.put(pc.localDescription.sdp)
        await asyncio.wait_for(done.wait(), 120)
        fast_packets = aiortc_compat.fast_path_packets(transceiver.receiver)
        await pc.close()
        return (marks["end"] - marks["start"]) / packets, fast_packets

    return asyncio.run(main())


def _receiver(offer_q: Any, answer_q: Any, out: Any, packets: int, fast: bool,
              use_uvloop: bool = False) -> None:
    if use_uvloop:  # the server's loop (uvicorn picks uvloop when it is installed)
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    offer = offer_q.get()
    out.put(_receive(offer, answer_q, packets, fast))
    answer_q.put("done")


def run_once(packets: int, rate: float, fast: bool, use_uvloop: bool = False
             ) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    offer_q, answer_q, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    sender = ctx.Process(target=_sender, args=(offer_q, answer_q, packets, rate))
    receiver = ctx.Process(target=_receiver, args=(offer_q, answer_q, out, packets, fast,
                                                                  use_uvloop))
    sender.start()
    receiver.start()
    result: tuple[float, int] = out.get(timeout=180)
    receiver.join(30)
    sender.join(30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=2000.0, help="packets per second")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--uvloop", action="store_true",
                        help="the receiver on uvloop, as `disco serve` runs (default: asyncio's)")
    args = parser.parse_args()
    print(f"{'round':>6}{'aiortc path us/pkt':>20}{'fast path us/pkt':>18}{'fast/aiortc':>13}"
          f"{'on fast path':>14}")
    ratios = []
    for k in range(args.rounds):
        slow, _ = run_once(args.packets, args.rate, fast=False, use_uvloop=args.uvloop)
        fast, on_fast = run_once(args.packets, args.rate, fast=True, use_uvloop=args.uvloop)
        ratios.append(fast / slow)
        print(f"{k + 1:>6}{slow * 1e6:>20.1f}{fast * 1e6:>18.1f}{fast / slow:>13.2f}"
              f"{on_fast:>14}", flush=True)
    ratios.sort()
    print(f"median fast/aiortc CPU per received packet: {ratios[len(ratios) // 2]:.2f} "
          f"({args.packets} packets at {args.rate:.0f}/s, receiver process CPU incl. idle loop)")


if __name__ == "__main__":
    main()
