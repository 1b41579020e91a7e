"""The nearby room: who hears whom follows where people are.

Glue between three pure parts: the proximity index (``groups.nearby.proximity``)
decides the audible pairs, ``groups.location.privacy`` decides what strangers
learn of each other (a display name and a distance rounded to 50 m, never
coordinates), and the media room (``sfu.room``) mixes at the gain of that
*rounded* distance (``ProximityIndex.audible_rounded``): the gain in the ``nearby``
list and the level of the audio say no more than the distance text. Lists
are ordered by rounded distance, then by the random participant id.

A location or radius change updates the mixer's plan at once (the peer
connections stay as they are) and sends ``nearby`` to each participant whose
audible set changed or to whom the mover's rounded distance (or gain) changed. Pairs
are mutual (same range, same gain both ways), so a move changes only the
pairs that include the mover: the plan and what each participant has been
told are patched pair by pair, O(the mover's neighbours), not O(room) and
not O(neighbours x their neighbours). A participant without a fix hears
nobody.

Across nodes (``signaling.nearby_mesh``), the guests of other nodes near this
node's guests are *ghosts* here: entries of the same index (position, radius,
display name, the node that serves them) that take part in the plan as
speakers whose voice is piped in, never as listeners (their own node mixes
for them). Pairs stay mutual: the ghost's node holds this node's guest as a
ghost in turn, with the same positions, so both mixes agree. ``piped_to(pid)``
says which nodes need a local guest's voice: those serving a ghost in range.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from groups.location.privacy import distance_text
from groups.nearby.proximity import GainCurve, ProximityIndex
from signaling.rooms import NEARBY_ROOM, Participant, RoomRegistry

if TYPE_CHECKING:
    from sfu.room import MediaRoom

log = logging.getLogger(__name__)


Seen = dict[str, tuple[int, str, float]]
"""What one participant may know of each person they hear: rounded metres, as text, gain."""


@dataclass
class Ghost:
    """A guest served by another node, mirrored here because it is near guests of ours."""

    participant_id: str
    node: str
    display_name: str
    radius_m: float
    seen_at: float
    """When its node last announced it (this node's clock): ghosts not renewed expire."""


class NearbyRoom:
    def __init__(self, rooms: RoomRegistry, curve: GainCurve | None = None) -> None:
        self.rooms = rooms
        self.index = ProximityIndex(curve)
        self._seen: dict[str, Seen] = {}  # kept equal to _seen_now(pid) for everyone indexed
        self._last_sent: dict[str, list[tuple[str, str, float]]] = {}
        self.ghosts: dict[str, Ghost] = {}
        self._pipes: dict[str, set[str]] = {}
        """Local guest -> the nodes serving a ghost in range of it (who needs its voice)."""
        self.on_local_fix: list[Callable[[Participant, float, float], None]] = []
        """Called after a local guest's fix or radius is filed (the mesh announces it)."""
        self.on_local_leave: list[Callable[[Participant], None]] = []
        self.on_media: list[Callable[[MediaRoom], None]] = []
        """Called when this node's nearby media room starts."""
        self._fixes: dict[str, tuple[float, float]] = {}

    def move(self, participant: Participant, lat: float, lon: float) -> None:
        """A fix from someone in the nearby room (coordinates validated by the caller)."""
        pid = participant.participant_id
        self.ghosts.pop(pid, None)  # (a ghost of the same id would be a stale copy)
        self._moved(pid, self.index.upsert(pid, lat, lon, participant.radius_m))
        self._fixes[pid] = (lat, lon)
        for hook in self.on_local_fix:
            hook(participant, lat, lon)

    def set_radius(self, participant: Participant, radius_m: float) -> None:
        participant.radius_m = radius_m
        pid = participant.participant_id
        if pid in self.index:
            self._moved(pid, self.index.set_radius(pid, radius_m))
            for hook in self.on_local_fix:
                hook(participant, *self._fixes[pid])

    def fix_of(self, pid: str) -> tuple[float, float] | None:
        """A local guest's last filed fix."""
        return self._fixes.get(pid)

    def leave(self, participant: Participant) -> None:
        pid = participant.participant_id
        self._last_sent.pop(pid, None)
        self._pipes.pop(pid, None)
        had_fix = self._fixes.pop(pid, None) is not None
        self._drop(pid)
        if had_fix:
            for hook in self.on_local_leave:
                hook(participant)

    # -- ghosts: guests of other nodes ---------------------------------------------------
    def place_ghost(self, ghost: Ghost, lat: float, lon: float) -> None:
        """File (or move) a guest of another node; ignored if it is one of ours."""
        room = self.rooms.get(NEARBY_ROOM)
        pid = ghost.participant_id
        if room is not None and pid in room.participants:
            return
        self.ghosts[pid] = ghost
        self._moved(pid, self.index.upsert(pid, lat, lon, ghost.radius_m))

    def drop_ghost(self, pid: str) -> None:
        if self.ghosts.pop(pid, None) is None:
            return
        self._refresh_pipes(self._drop(pid))

    def piped_to(self, pid: str) -> set[str]:
        """The nodes that need local guest ``pid``'s voice (they serve a ghost in range)."""
        return self._pipes.get(pid, set())

    def _refresh_pipes(self, pids: Iterable[str]) -> None:
        for pid in pids:
            if pid in self.ghosts:
                continue
            nodes = {self.ghosts[o].node for o in self._seen.get(pid, {}) if o in self.ghosts}
            if nodes:
                self._pipes[pid] = nodes
            else:
                self._pipes.pop(pid, None)

    def _drop(self, pid: str) -> set[str]:
        """Take ``pid`` out of the index, the plan and everyone's view; who lost it."""
        self._seen.pop(pid, None)
        if pid not in self.index:
            return set()
        lost = self.index.remove(pid)
        room = self.rooms.get(NEARBY_ROOM)
        if room is not None and room.media is not None:
            room.media.set_mutual(pid, None, lost)
        for other in lost:
            self._seen.get(other, {}).pop(pid, None)
            self._notify(other)
        return lost

    def hearers_of(self, participant: Participant) -> set[str]:
        """Who can hear ``participant`` (for nearby chat): mutual by construction."""
        return self.hearers(participant.participant_id)

    def hearers(self, pid: str) -> set[str]:
        return self.index.neighbours(pid) if pid in self.index else set()

    def media_started(self) -> None:
        """A new media room starts with the whole plan (an empty one still means nearby)."""
        room = self.rooms.get(NEARBY_ROOM)
        if room is not None and room.media is not None:
            room.media.set_audibility(self.plan([*room.participants, *self.ghosts]))
            for hook in self.on_media:
                hook(room.media)

    def people(self, participant: Participant) -> list[dict[str, Any]]:
        """What ``participant`` may know of the people they hear, computed afresh."""
        pid = participant.participant_id
        return self._listing(self._seen_now(pid)) if pid in self.index else []

    def _moved(self, pid: str, changed: set[str]) -> None:
        """Patch the plan and everyone's view after ``pid``'s pairs changed (``changed``)."""
        room = self.rooms.get(NEARBY_ROOM)
        if room is None:
            return
        mine = self._seen_now(pid)
        lost = changed - mine.keys() - {pid}
        if room.media is not None:
            room.media.set_mutual(pid, {other: gain for other, (_, _, gain) in mine.items()}, lost)
        self._seen[pid] = mine
        told = [pid]
        for other, seen in mine.items():
            theirs = self._seen.setdefault(other, {})
            before = theirs.get(pid)
            theirs[pid] = seen
            if before != seen:  # a radius change can move the gain alone
                told.append(other)
        for other in lost:
            if self._seen.get(other, {}).pop(pid, None) is not None:
                told.append(other)
        for other in told:
            self._notify(other)
        # who needs whose voice: a ghost's move changes its local neighbours' pipes
        self._refresh_pipes(changed | mine.keys() if pid in self.ghosts else (pid,))

    def plan(self, pids: Iterable[str]) -> dict[str, dict[str, float]]:
        """listener -> {speaker: gain} for ``pids`` (those indexed), built afresh."""
        return {pid: {other: gain for other, (_, _, gain) in self._seen_now(pid).items()}
                for pid in pids if pid in self.index}

    def _seen_now(self, pid: str) -> Seen:
        """Each person ``pid`` hears: the rounded distance, and the gain of that step."""
        return {other: (metres, distance_text(metres), gain)
                for other, (metres, gain) in self.index.audible_rounded(pid).items()}

    def _listing(self, seen: Seen) -> list[dict[str, Any]]:
        room = self.rooms.get(NEARBY_ROOM)
        if room is None:
            return []
        result = []
        # nearest first by the rounded distance only, ties by the (random) participant id
        for _, other in sorted([(metres, o) for o, (metres, _, _) in seen.items()]):
            who = room.participants.get(other)
            ghost = self.ghosts.get(other)
            name = (who.peer.display_name if who is not None
                    else ghost.display_name if ghost is not None else None)
            if name is not None:
                _, distance, gain = seen[other]
                result.append({"participant_id": other, "display_name": name,
                               "distance": distance, "gain": gain})
        return result

    def _notify(self, pid: str) -> None:
        """Send ``pid`` its list if anything a stranger could notice changed."""
        room = self.rooms.get(NEARBY_ROOM)
        participant = room.participants.get(pid) if room is not None else None
        if participant is None or pid not in self.index:
            return
        people = self._listing(self._seen.get(pid, {}))
        summary = [(p["participant_id"], p["distance"], p["gain"]) for p in people]
        if self._last_sent.get(pid) == summary:
            return
        self._last_sent[pid] = summary
        participant.peer.send({"type": "nearby", "room": NEARBY_ROOM,
                               "radius_m": participant.radius_m, "people": people})
