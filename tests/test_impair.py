"""The impairment layer: seeded loss, bursts, jitter/reordering; the loopback UDP relay."""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest

from tests.impair import Impairment, Link, UdpRelay, impair

N = 5_000


def packets(n: int = N) -> list[tuple[int, bytes, float]]:
    return [(i % 65_536, b"x%d" % i, i * 0.02) for i in range(n)]


def test_clean_link_changes_nothing() -> None:
    out = impair(packets(100), Impairment())
    assert [(a.seq, a.time) for a in out] == [(i, i * 0.02) for i in range(100)]


def test_random_loss_rate_and_seed() -> None:
    out = impair(packets(), Impairment(loss=0.1, seed=7))
    assert 0.085 < 1 - len(out) / N < 0.115
    assert impair(packets(), Impairment(loss=0.1, seed=7)) == out  # repeatable
    assert impair(packets(), Impairment(loss=0.1, seed=8)) != out


def loss_runs(out_seqs: list[int], n: int) -> list[int]:
    got = set(out_seqs)
    runs, run = [], 0
    for i in range(n):
        if i in got:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    return runs


def test_gilbert_elliott_bursts() -> None:
    imp = Impairment(burst_p=0.02, burst_r=0.25, seed=3)  # mean burst 4, loss ~7.4 %
    out = impair(packets(20_000), imp)
    runs = loss_runs([a.seq for a in out], 20_000)
    loss = sum(runs) / 20_000
    assert 0.055 < loss < 0.095
    assert 3.0 < sum(runs) / len(runs) < 5.0
    random_runs = loss_runs([a.seq for a in impair(packets(20_000), Impairment(loss=loss))],
                            20_000)
    assert sum(random_runs) / len(random_runs) < 1.2


def test_jitter_reorders_and_bounds_delay() -> None:
    out = impair(packets(), Impairment(jitter_ms=60, delay_ms=10, seed=1))
    assert len(out) == N
    delays = [a.time - a.seq * 0.02 for a in out]
    assert min(delays) >= 0.010 - 1e-9 and max(delays) <= 0.070 + 1e-9
    reordered = sum(1 for x, y in itertools.pairwise(out) if y.seq < x.seq)
    assert 0.2 < reordered / N < 0.45  # about a third of the packets cross a neighbour


def test_link_counts() -> None:
    link = Link(Impairment(loss=0.5, seed=2))
    results = [link.arrival(i * 0.02) for i in range(1000)]
    assert link.sent == 1000 and link.lost == sum(r is None for r in results)
    assert "50% loss" in Impairment(loss=0.5).describe()
    assert Impairment().describe() == "clean"


async def test_udp_relay_impairs_each_way() -> None:
    loop = asyncio.get_running_loop()
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    client.bind(("127.0.0.1", 0))
    target.setblocking(False)
    client.setblocking(False)
    relay = await UdpRelay.start(target.getsockname(), up=Impairment(loss=0.5, seed=1),
                                 down=Impairment(delay_ms=30))
    try:
        for i in range(200):
            client.sendto(b"up%d" % i, relay.address)
        got_up = []
        while True:
            try:
                data = await asyncio.wait_for(loop.sock_recv(target, 100), 0.3)
            except TimeoutError:
                break
            got_up.append(data)
        assert 60 < len(got_up) < 140
        assert relay.up.sent == 200 and relay.up.lost == 200 - len(got_up)

        sent_at = loop.time()
        target.sendto(b"down", relay.address)
        data = await asyncio.wait_for(loop.sock_recv(client, 100), 2.0)
        assert data == b"down"
        assert loop.time() - sent_at >= 0.025
    finally:
        relay.close()
        target.close()
        client.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_seeds_do_not_depend_on_other_settings(seed: int) -> None:
    """Same seed, loss only vs loss + jitter: the same packets are lost."""
    a = {x.seq for x in impair(packets(1000), Impairment(loss=0.2, seed=seed))}
    b = {x.seq for x in impair(packets(1000), Impairment(loss=0.2, jitter_ms=40, seed=seed))}
    assert a == b
