"""The nearby room: who hears whom follows where people are.

Glue between three pure parts: the proximity index (``groups.proximity``)
decides the audible pairs and gains, the media room (``sfu.room``) mixes by
them, and ``groups.privacy`` decides what strangers learn of each other: a
display name and a distance rounded to 50 m, never coordinates.

A location or radius change updates the mixer's plan at once (the peer
connections stay as they are) and sends ``nearby`` to each participant whose
audible set changed or whose neighbours' distances moved.
"""

from __future__ import annotations

import logging
from typing import Any

from groups.privacy import stranger_distance
from groups.proximity import GainCurve, ProximityIndex
from signaling.rooms import Participant, RoomRegistry

log = logging.getLogger(__name__)

NEARBY_ROOM = "nearby"


class NearbyRoom:
    def __init__(self, rooms: RoomRegistry, curve: GainCurve | None = None) -> None:
        self.rooms = rooms
        self.index = ProximityIndex(curve)
        self._last_sent: dict[str, list[tuple[str, str]]] = {}

    def move(self, participant: Participant, lat: float, lon: float) -> None:
        """A fix from someone in the nearby room (coordinates validated by the caller)."""
        pid = participant.participant_id
        changed = self.index.upsert(pid, lat, lon, participant.radius_m)
        self._apply(changed | self.index.neighbours(pid) | {pid})

    def set_radius(self, participant: Participant, radius_m: float) -> None:
        participant.radius_m = radius_m
        pid = participant.participant_id
        if pid in self.index:
            changed = self.index.set_radius(pid, radius_m)
            self._apply(changed | self.index.neighbours(pid) | {pid})

    def leave(self, participant: Participant) -> None:
        pid = participant.participant_id
        self._last_sent.pop(pid, None)
        if pid in self.index:
            changed = self.index.remove(pid)
            self._apply(changed)

    def hearers_of(self, participant: Participant) -> set[str]:
        """Who can hear ``participant`` (for nearby chat): mutual by construction."""
        return self.hearers(participant.participant_id)

    def hearers(self, pid: str) -> set[str]:
        return self.index.neighbours(pid) if pid in self.index else set()

    def media_started(self) -> None:
        """A new media room starts with a plan: nobody hears a stranger without a fix."""
        self._apply(set())

    def _apply(self, affected: set[str]) -> None:
        room = self.rooms.get(NEARBY_ROOM)
        if room is None:
            return
        if room.media is not None:
            # Everyone in the room gets a row: no fix yet means hearing nobody.
            plan: dict[str, dict[str, float]] = {pid: {} for pid in room.participants}
            plan.update(self.index.audibility(room.participants))
            room.media.set_audibility(plan)
        for pid in affected:
            participant = room.participants.get(pid)
            if participant is not None and pid in self.index:
                self._send_people(participant)

    def people(self, participant: Participant) -> list[dict[str, Any]]:
        """What ``participant`` may know of the people they hear: names and rounded distances."""
        room = self.rooms.get(NEARBY_ROOM)
        pid = participant.participant_id
        if room is None or pid not in self.index:
            return []
        result = []
        for other, gain in sorted(self.index.audible(pid).items()):
            who = room.participants.get(other)
            if who is None:
                continue
            result.append({
                "participant_id": other,
                "display_name": who.peer.display_name,
                "distance": stranger_distance(self.index.distance_m(pid, other)),
                "gain": gain,
            })
        return result

    def _send_people(self, participant: Participant) -> None:
        people = self.people(participant)
        summary = [(p["participant_id"], p["distance"]) for p in people]
        if self._last_sent.get(participant.participant_id) == summary:
            return  # nothing a stranger could notice has changed
        self._last_sent[participant.participant_id] = summary
        participant.peer.send({"type": "nearby", "room": NEARBY_ROOM,
                               "radius_m": participant.radius_m, "people": people})
