"""Where a room lives: node liveness and room placement. Pure (``now`` passed in).

The rules, after LiveKit's ``SelectRoomNode`` and the failures its users hit:

- A node is live while its last heartbeat is under ``HEARTBEAT_EXPIRY_S`` old.
  A heartbeat stamped more than ``MAX_CLOCK_SKEW_S`` in the future (a node
  whose clock runs ahead) is ignored too: it would otherwise look live for as
  long as its clock is ahead.
- A room stays on its node while that node lives (``place`` keeps the holder).
- Otherwise it goes to the less loaded (by load / capacity) of two live nodes
  drawn at random among those under capacity ("power of two choices": close
  to least-loaded, without every node piling onto the same one at once).
  ``prefer`` (the node that accepted the join) wins when it is live and under
  capacity: until joins are relayed between nodes, a room placed elsewhere
  would send its first member away.
- Media nodes (``disco media``: no HTTP, no database, rooms only) take the
  rooms while any of them is live and under capacity; the full nodes host
  again when none is (so a deployment whose media nodes all died still calls).
- Two nodes may compute a placement for one room at the same moment; the
  claim that writes it is atomic and ``settle_claim`` is what it does: a live
  holder stays, else the proposal is written. The second claim therefore
  reads the first's holder, and both nodes agree (no room on two nodes).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass

HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_EXPIRY_S = 5.0
"""A node is live while its heartbeat is younger than this (LiveKit uses 5 s too)."""
MAX_CLOCK_SKEW_S = 2.0
"""A heartbeat stamped further than this in the future is ignored."""
CLAIM_TTL_S = 10.0
"""A room claim lapses this long after its holder last renewed it (every heartbeat)."""
ROLE_FULL = "full"
"""A whole node (``disco serve``): HTTP, WebSockets, the database, and rooms."""
ROLE_MEDIA = "media"
"""A media node (``disco media``): rooms only, reached through the full nodes' relay."""
ROLES = (ROLE_FULL, ROLE_MEDIA)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node as its heartbeat describes it."""

    node_id: str
    load: int
    """Participants in the rooms it hosts."""
    capacity: int
    """Participants it takes before new rooms go elsewhere."""
    heartbeat_at: float
    """Unix time of the heartbeat, by the node's own clock."""
    url: str = ""
    """Where clients reach this node directly (empty if not configured)."""
    media_address: str = ""
    region: str = ""
    role: str = ROLE_FULL
    """``ROLE_FULL`` or ``ROLE_MEDIA`` (a heartbeat without it is a full node's)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> NodeInfo:
        """Parse a heartbeat; ValueError if it is not one."""
        try:
            data = json.loads(raw)
            node = cls(
                node_id=str(data["node_id"]), load=int(data["load"]),
                capacity=int(data["capacity"]), heartbeat_at=float(data["heartbeat_at"]),
                url=str(data.get("url", "")), media_address=str(data.get("media_address", "")),
                region=str(data.get("region", "")), role=str(data.get("role", ROLE_FULL)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a node heartbeat: {exc}") from exc
        if not node.node_id or node.load < 0 or node.capacity < 1 or not math.isfinite(
            node.heartbeat_at
        ) or node.role not in ROLES:
            raise ValueError("not a node heartbeat: bad node_id, load, capacity, time or role")
        return node


def is_live(node: NodeInfo, now: float, expiry_s: float = HEARTBEAT_EXPIRY_S,
            skew_s: float = MAX_CLOCK_SKEW_S) -> bool:
    """Heard from within ``expiry_s``, and not stamped beyond ``skew_s`` in the future."""
    return now - expiry_s < node.heartbeat_at <= now + skew_s


def live_nodes(nodes: Iterable[NodeInfo], now: float, expiry_s: float = HEARTBEAT_EXPIRY_S,
               skew_s: float = MAX_CLOCK_SKEW_S) -> dict[str, NodeInfo]:
    return {n.node_id: n for n in nodes if is_live(n, now, expiry_s, skew_s)}


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str
    kept: bool
    """True if the room stays with its live holder; False for a new placement."""


def place(holder: str | None, nodes: Iterable[NodeInfo], now: float, rng: random.Random,
          prefer: str | None = None, expiry_s: float = HEARTBEAT_EXPIRY_S,
          skew_s: float = MAX_CLOCK_SKEW_S) -> Placement | None:
    """Where a room goes; None if no live node has capacity left."""
    live = live_nodes(nodes, now, expiry_s, skew_s)
    if holder is not None and holder in live:
        return Placement(holder, kept=True)
    open_nodes = sorted((n for n in live.values() if n.load < n.capacity),
                        key=lambda n: n.node_id)
    media = [n for n in open_nodes if n.role == ROLE_MEDIA]
    if media:
        open_nodes = media
    if not open_nodes:
        return None
    if prefer is not None and any(n.node_id == prefer for n in open_nodes):
        return Placement(prefer, kept=False)
    pair = rng.sample(open_nodes, min(2, len(open_nodes)))
    best = min(pair, key=lambda n: (n.load / n.capacity, n.load, n.node_id))
    return Placement(best.node_id, kept=False)


def settle_claim(current: str | None, proposed: str, live: Collection[str]) -> str:
    """What an atomic claim leaves as the room's holder (the Redis script does the same)."""
    if current is not None and current in live:
        return current
    return proposed
