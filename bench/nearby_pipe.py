"""Benchmark: what piping a nearby speaker's voice to another node costs.

Not a test. One process, one real Redis (a prefix of its own). For
``--speakers`` speakers, every 20 ms tick the sending side packs each frame
(``sfu.pipe.pack_frame``) and publishes the tick's frames in one pipeline, as
``NearbyMesh`` does; the receiving side (its own Redis connection) unpacks
each and pushes it into a ``PipedSource``. Printed, measured side by side in
the same run (the machine is shared, so compare ratios, not absolutes):

- CPU per piped frame, sending + receiving, against one libopus decode and
  one libopus encode of the same frame (what a node pays for a speaker of
  its own: the pipe replaces the receiving node's decode of that speaker),
  for one Redis message per frame and for one per tick (what ``NearbyMesh``
  sends: a tick's frames for one node back to back), alternating every
  second in the same run;
- one-way delay through Redis (publish -> received), median and p99.

    .venv/bin/python -m bench.nearby_pipe [--speakers 20] [--seconds 5]
                                          [--redis redis://127.0.0.1:6379/1]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import statistics
import time

import numpy as np

from protocol.opus import Decoder, Encoder
from sfu.mixer import FRAME_SAMPLES, SAMPLE_RATE_HZ
from sfu.pipe import PipedSource, pack_frame, unpack_frames

FRAME_S = 0.02


def tone(hz: float, index: int) -> np.ndarray:
    n = np.arange(index * FRAME_SAMPLES, (index + 1) * FRAME_SAMPLES)
    return (np.sin(2 * math.pi * hz * n / SAMPLE_RATE_HZ) * 8_000).astype(np.int16)


def codec_us(frames: list[np.ndarray]) -> tuple[float, float]:
    """Microseconds of CPU per Opus encode and per decode of these frames."""
    enc, dec = Encoder(32_000), Decoder()
    t0 = time.process_time()
    packets = [enc.encode(f) for f in frames]
    t1 = time.process_time()
    for p in packets:
        dec.decode(p)
    t2 = time.process_time()
    return (t1 - t0) / len(frames) * 1e6, (t2 - t1) / len(frames) * 1e6


async def main() -> None:
    import redis.asyncio as aioredis

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speakers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--redis", default=os.environ.get("DISCO_TEST_REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    if args.speakers < 1 or args.seconds <= 0:
        parser.error("--speakers must be >= 1 and --seconds > 0")
    channel = f"bench-{secrets.token_hex(6)}:nearby-voice:n2"
    sender, receiver = aioredis.Redis.from_url(args.redis), aioredis.Redis.from_url(args.redis)
    try:
        await sender.ping()
    except Exception as exc:
        raise SystemExit(f"cannot reach Redis at {args.redis}: {exc}") from None
    pubsub = receiver.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    speakers = [f"p_{n:012x}" for n in range(args.speakers)]
    sources = {s: PipedSource() for s in speakers}
    sent_at: dict[tuple[str, int], float] = {}
    modes = ("one message per frame", "one message per tick")
    delays: dict[str, list[float]] = {m: [] for m in modes}
    cpu = dict.fromkeys(modes, 0.0)
    frames_of = dict.fromkeys(modes, 0)
    ticks = round(args.seconds / FRAME_S)
    block = 50  # the two ways alternate every second, so both see the same machine
    frames = [tone(440.0 + 10 * n, n) for n in range(50)]
    done = asyncio.Event()
    expected = ticks * len(speakers)

    async def receive() -> None:
        got = 0
        async for raw in pubsub.listen():
            if raw.get("type") != "message":
                continue
            for frame in unpack_frames(raw["data"]):
                sources[frame.speaker].push(frame.seq, frame.pcm, time.monotonic())
                mode = modes[(frame.seq // block) % 2]
                delays[mode].append(time.monotonic() - sent_at.pop((frame.speaker, frame.seq)))
                got += 1
            if got == expected:
                done.set()
                return

    reader = asyncio.create_task(receive())
    start = time.monotonic()
    for tick in range(ticks):
        mode = modes[(tick // block) % 2]
        delay = start + tick * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.process_time()
        async with sender.pipeline(transaction=False) as pipe:
            parts = []
            for s in speakers:
                sent_at[(s, tick)] = time.monotonic()
                data = pack_frame(s, tick, frames[tick % len(frames)])
                if mode == modes[0]:
                    pipe.publish(channel, data)
                else:
                    parts.append(data)
            if parts:
                pipe.publish(channel, b"".join(parts))
            await pipe.execute()
        await asyncio.sleep(0.005)  # the receiver runs here: its CPU counts for this tick
        cpu[mode] += time.process_time() - t0
        frames_of[mode] += len(speakers)
    await asyncio.wait_for(done.wait(), 10.0)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await pubsub.aclose()
    await sender.aclose()
    await receiver.aclose()

    encode_us, decode_us = codec_us(frames * 4)
    print(f"{len(speakers)} speakers x {ticks} ticks, PCM frames piped through Redis "
          "(sender and receiver in one process; CPU is both sides' together)")
    print(f"same run, one frame: Opus decode {decode_us:.0f} us, encode {encode_us:.0f} us")
    for mode in modes:
        per_frame = cpu[mode] / frames_of[mode] * 1e6
        d = sorted(delays[mode])
        p50, p99 = statistics.median(d) * 1e3, d[int(0.99 * (len(d) - 1))] * 1e3
        print(f"{mode}: {per_frame:.0f} us CPU per frame = {per_frame / decode_us:.2f} decodes"
              f"; delay median {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
