"""Placement, pure: liveness with expiry and skew, keep-where-it-is, two random
choices, and the race where two nodes claim one room at once."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from signaling.cluster.placement import (
    HEARTBEAT_EXPIRY_S,
    MAX_CLOCK_SKEW_S,
    ROLE_MEDIA,
    NodeInfo,
    Placement,
    is_live,
    live_nodes,
    place,
    settle_claim,
)

NOW = 1_800_000_000.0


def node(name: str, load: int = 0, capacity: int = 10, age_s: float = 0.0) -> NodeInfo:
    return NodeInfo(name, load, capacity, NOW - age_s, url=f"http://{name}")


def media(name: str, load: int = 0, capacity: int = 10, age_s: float = 0.0) -> NodeInfo:
    return NodeInfo(name, load, capacity, NOW - age_s, role=ROLE_MEDIA)


LIVENESS = [
    (0.0, True),
    (HEARTBEAT_EXPIRY_S - 0.01, True),
    (HEARTBEAT_EXPIRY_S, False),  # exactly expired
    (60.0, False),  # long gone
    (-MAX_CLOCK_SKEW_S, True),  # a little in the future: clocks differ
    (-MAX_CLOCK_SKEW_S - 0.01, False),  # too far in the future: ignored
    (-3600.0, False),
]


@pytest.mark.parametrize(("age_s", "live"), LIVENESS)
def test_liveness(age_s: float, live: bool) -> None:
    assert is_live(node("a", age_s=age_s), NOW) is live


PLACE = [
    # (holder, nodes, prefer, expected)
    ("a", [node("a", load=10), node("b")], None, Placement("a", kept=True)),  # full: still kept
    ("a", [node("a", age_s=6), node("b")], None, Placement("b", kept=False)),  # holder lapsed
    ("a", [node("a", age_s=-10), node("b")], None, Placement("b", kept=False)),  # future beat
    ("gone", [node("b")], None, Placement("b", kept=False)),  # holder unknown
    (None, [node("a", load=3), node("b", load=1)], None, Placement("b", kept=False)),
    (None, [node("a", load=3), node("b", load=1)], "a", Placement("a", kept=False)),
    (None, [node("a", load=10), node("b", load=9)], "a", Placement("b", kept=False)),  # a full
    (None, [node("a", age_s=9), node("b", load=9)], "a", Placement("b", kept=False)),  # a dead
    (None, [node("a", load=2, capacity=4), node("b", load=4, capacity=20)], None,
     Placement("b", kept=False)),  # by load / capacity, not by load
    (None, [node("a", load=10), node("b", load=10)], None, None),  # all full
    (None, [node("a", age_s=5), node("b", age_s=-5)], None, None),  # none live
    (None, [], None, None),
    # media nodes take new rooms while one is live with room; the full nodes otherwise
    (None, [node("a"), media("m", load=9)], "a", Placement("m", kept=False)),
    (None, [node("a"), media("m", load=3), media("n", load=1)], "a", Placement("n", kept=False)),
    (None, [node("a"), media("m", load=10)], "a", Placement("a", kept=False)),  # media full
    (None, [node("a"), media("m", age_s=6)], "a", Placement("a", kept=False)),  # media dead
    ("a", [node("a"), media("m")], "a", Placement("a", kept=True)),  # a live holder keeps it
]


@pytest.mark.parametrize(("holder", "nodes", "prefer", "expected"), PLACE)
def test_place(holder: str | None, nodes: list[NodeInfo], prefer: str | None,
               expected: Placement | None) -> None:
    assert place(holder, nodes, NOW, random.Random(1), prefer) == expected


def test_two_random_choices_avoid_the_busiest_and_spread_the_rest() -> None:
    nodes = [node("a", load=0), node("b", load=1), node("c", load=2), node("d", load=9)]
    rng = random.Random(7)
    picks = Counter(place(None, nodes, NOW, rng).node_id for _ in range(3000))  # type: ignore[union-attr]
    assert picks["d"] == 0  # the busiest only wins a pair against itself, which never happens
    assert picks["a"] > picks["b"] > picks["c"] > 0  # less loaded, more often; not only one
    assert picks["a"] == pytest.approx(3000 / 2, rel=0.1)  # a is in half of all pairs


def test_live_nodes_ignores_stale_and_future_heartbeats() -> None:
    nodes = [node("a"), node("b", age_s=5.5), node("c", age_s=-30), node("d", age_s=1)]
    assert sorted(live_nodes(nodes, NOW)) == ["a", "d"]


SETTLE = [
    (None, "a", {"a", "b"}, "a"),
    ("b", "a", {"a", "b"}, "b"),  # a live holder stays
    ("b", "a", {"a"}, "a"),  # a dead holder's room is free
    ("a", "a", {"a"}, "a"),
]


@pytest.mark.parametrize(("current", "proposed", "live", "expected"), SETTLE)
def test_settle_claim(current: str | None, proposed: str, live: set[str], expected: str) -> None:
    assert settle_claim(current, proposed, live) == expected


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_two_nodes_claiming_one_room_at_once_agree(order: tuple[str, str]) -> None:
    """Both read "no holder" and each proposes itself; the atomic claims run one
    after the other, and the second finds the first's live claim."""
    nodes = [node("a", load=1), node("b", load=1)]
    proposals = {name: place(None, nodes, NOW, random.Random(3), prefer=name) for name in order}
    assert {name: p.node_id for name, p in proposals.items() if p} == {"a": "a", "b": "b"}
    holder: str | None = None
    outcomes = []
    for name in order:
        holder = settle_claim(holder, proposals[name].node_id, {"a", "b"})  # type: ignore[union-attr]
        outcomes.append(holder)
    assert outcomes == [order[0], order[0]]  # one room, one node


BAD_HEARTBEATS = [
    b"not json",
    b"{}",
    b'{"node_id": "a", "load": 1, "capacity": 0, "heartbeat_at": 1}',
    b'{"node_id": "a", "load": -1, "capacity": 5, "heartbeat_at": 1}',
    b'{"node_id": "", "load": 1, "capacity": 5, "heartbeat_at": 1}',
    b'{"node_id": "a", "load": "x", "capacity": 5, "heartbeat_at": 1}',
    b'{"node_id": "a", "load": 1, "capacity": 5, "heartbeat_at": "NaN"}',
    b"[1, 2]",
    b'{"node_id": "a", "load": 1, "capacity": 5, "heartbeat_at": 1, "role": "edge"}',
]


@pytest.mark.parametrize("raw", BAD_HEARTBEATS)
def test_bad_heartbeats_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a node heartbeat"):
        NodeInfo.from_json(raw)


def test_heartbeat_round_trip() -> None:
    info = NodeInfo("a", 3, 40, NOW, url="http://a:8080", media_address="10.0.0.1", region="eu")
    assert NodeInfo.from_json(info.to_json()) == info
    assert NodeInfo.from_json(media("m").to_json()).role == ROLE_MEDIA


def test_a_heartbeat_without_a_role_is_a_full_nodes() -> None:
    """Nodes of the version before media nodes, during a rolling upgrade."""
    old = NodeInfo.from_json(b'{"node_id": "a", "load": 1, "capacity": 5, "heartbeat_at": 1}')
    assert old.role == "full"
