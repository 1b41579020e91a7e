"""A userspace network impairment layer for tests and the bench (no ``tc netem`` here).

Pure core: ``Link`` decides, per packet, whether it is lost and when it
arrives: seeded random loss, Gilbert-Elliott bursts (a good and a bad state;
``p`` = P(good -> bad) per packet, ``r`` = P(bad -> good), everything lost in
the bad state), a fixed delay and uniform jitter (which reorders packets
whenever two arrivals cross: 0-60 ms jitter on 20 ms packets reorders about
a third of them). ``impair`` applies a link to a list of ``(seq, payload,
send_time)`` and returns the arrivals sorted by time.

Thin asyncio shell: ``UdpRelay`` forwards datagrams on loopback between a
client and a target through an uplink and a downlink ``Link``, for tests
with real sockets (aiortc peers, a Janus). Ephemeral ports only.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Impairment:
    loss: float = 0.0
    """Independent loss probability per packet (in the good state)."""
    burst_p: float = 0.0
    """Gilbert-Elliott P(good -> bad) per packet; 0 = no bursts."""
    burst_r: float = 1.0
    """P(bad -> good) per packet: mean burst length is 1 / r packets."""
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    """Each packet gets an extra delay uniform in 0..jitter_ms."""
    seed: int = 0

    def describe(self) -> str:
        parts = []
        if self.loss:
            parts.append(f"{self.loss:.0%} loss")
        if self.burst_p:
            parts.append(f"bursts p={self.burst_p:g} r={self.burst_r:g}")
        if self.jitter_ms:
            parts.append(f"0-{self.jitter_ms:g} ms jitter")
        if self.delay_ms:
            parts.append(f"{self.delay_ms:g} ms delay")
        return ", ".join(parts) or "clean"


CLEAN = Impairment()


@dataclass
class Link:
    """One direction of a path: decides each packet's fate, in send order."""

    impairment: Impairment
    _rng: random.Random = field(init=False)
    _bad: bool = field(init=False, default=False)
    sent: int = field(init=False, default=0)
    lost: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.impairment.seed)

    def arrival(self, send_time: float) -> float | None:
        """When a packet sent at ``send_time`` (s) arrives, or None if it is lost."""
        imp = self.impairment
        rng = self._rng
        self.sent += 1
        if imp.burst_p:
            self._bad = rng.random() >= imp.burst_r if self._bad else rng.random() < imp.burst_p
        # Draw every random number every time, so one setting does not shift
        # the others' sequences between conditions with the same seed.
        drop_roll, jitter_roll = rng.random(), rng.random()
        if self._bad or drop_roll < imp.loss:
            self.lost += 1
            return None
        return send_time + (imp.delay_ms + jitter_roll * imp.jitter_ms) / 1000.0


@dataclass(frozen=True, order=True)
class Arrival:
    time: float
    seq: int
    payload: bytes = field(compare=False)


def impair(packets: Iterable[tuple[int, bytes, float]], impairment: Impairment) -> list[Arrival]:
    """``(seq, payload, send_time)`` through one link: the survivors, by arrival time."""
    link = Link(impairment)
    out = []
    for seq, payload, sent in packets:
        at = link.arrival(sent)
        if at is not None:
            out.append(Arrival(at, seq, payload))
    out.sort()
    return out


class UdpRelay(asyncio.DatagramProtocol):
    """Loopback UDP relay: client <-> relay <-> target, impaired each way.

    The first address that is not the target becomes the client. Use
    ``await UdpRelay.start(target, up, down)``, point the client at
    ``relay.address``, and ``relay.close()`` at the end.
    """

    def __init__(self, target: tuple[str, int], up: Impairment, down: Impairment) -> None:
        self.target = target
        self.up = Link(up)
        self.down = Link(down)
        self.client: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.TimerHandle] = set()

    @classmethod
    async def start(cls, target: tuple[str, int], up: Impairment = CLEAN,
                    down: Impairment = CLEAN, host: str = "127.0.0.1") -> UdpRelay:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(target, up, down), local_addr=(host, 0))
        return protocol

    @property
    def address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = self._loop.time()
        if addr[:2] == self.target[:2]:
            if self.client is None:
                return
            at, dest = self.down.arrival(now), self.client
        else:
            self.client = addr
            at, dest = self.up.arrival(now), self.target
        if at is None:
            return
        handle: asyncio.TimerHandle | None = None

        def send() -> None:
            if handle is not None:
                self._pending.discard(handle)
            if self._transport is not None and not self._transport.is_closing():
                self._transport.sendto(data, dest)

        handle = self._loop.call_at(at, send)
        self._pending.add(handle)

    def close(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()
