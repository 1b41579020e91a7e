"""Location use cases with their I/O: store in one transaction, then fan out on the bus.

What the WebSocket session and the REST routes call. Each function commits
before publishing, so a live member never hears of a fix or event that a
rollback then erases. Bus topics are the ones ``signaling.routes.groups``
already uses: ``group:<id>`` reaches the group's live members on every node.

Messages published (all JSON-able dicts)::

    member_location  {group_id, user_id, precision, location: {lat, lon, accuracy_m, ts, ...}}
    member_sharing   {group_id, user_id, paused, precision}
    place_event      {event_id, group_id, user_id, kind: enter|leave, place: {id, name}, ts}
    sos              {event_id, group_id, user_id, kind: sos, location: {lat, lon} | absent, ts}

(``event_id``, not ``id``: a top-level ``id`` is the receiver's own request id.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from common.bus import Bus
from common.db import SessionFactory, session_scope
from common.errors import RateLimited
from groups.limiter import Limiter, LocalLimiter
from groups.location import store
from groups.location.fixes import Fix, FixLimiter, parse_fix

log = logging.getLogger(__name__)

SOS_BURST = 3
"""SOS alerts a member may raise at once (a second press, a retry from a bad network)."""
SOS_RATE_PER_S = 1 / 60.0
"""After the burst, one more SOS per minute: every alert pushes to every member of
every group the sender is in, so one stuck button must not page them all each second."""


def group_topic(group_id: int) -> str:
    return f"group:{group_id}"


async def publish_fix(
    sessions: SessionFactory, bus: Bus, user_id: int, fix: Fix, now: float
) -> list[dict[str, Any]]:
    """Record a validated fix, run the geofences, tell the user's groups.

    Returns the ``place_event`` messages this fix caused (also published to
    each group's topic), so the sender's session can show them at once.
    A fix older than the last known one goes to history only: the live map
    never jumps back. Paused groups get nothing (no position, no place
    events); approximate ones get the coarsened fix and no place events
    (``store.places_evaluated``).
    """
    async with session_scope(sessions) as db:
        await store.record_fix(db, user_id, fix, now)
        last = await store.last_fix(db, user_id)
        newest = last is not None and last.ts == fix.ts
        sharing = await store.sharing_by_group(db, user_id)
        events = [store.event_json(e)
                  for e in await store.evaluate_places(db, user_id, fix, now, sharing)]
    for group_id, share in sorted(sharing.items() if newest else ()):
        shown = store.shown_fix(fix, share)
        if shown is None:
            continue
        await bus.publish(group_topic(group_id), {
            "type": "member_location", "group_id": group_id, "user_id": user_id,
            "precision": share.precision.value, "location": shown.to_json(),
        })
    messages = [{"type": "place_event", **event} for event in events]
    for message in messages:
        await bus.publish(group_topic(message["group_id"]), message)
    return messages


async def raise_sos(
    sessions: SessionFactory, bus: Bus, user_id: int, now: float
) -> list[dict[str, Any]]:
    """An SOS to every group of the user, with the last known position (precise, even if
    paused or approximate: an SOS is the member asking to be found). Returns the messages."""
    async with session_scope(sessions) as db:
        events = [store.event_json(e) for e in await store.add_sos(db, user_id, now)]
    messages = [{"type": "sos", **event} for event in events]
    for message in messages:
        await bus.publish(group_topic(message["group_id"]), message)
    log.info("sos from user %d to %d group(s)", user_id, len(messages))
    return messages


async def change_sharing(
    sessions: SessionFactory, bus: Bus, group_id: int, user_id: int, paused: bool,
    precision: str, now: float,
) -> dict[str, Any]:
    """A member pauses/resumes or changes precision in one group; the group hears it at once."""
    async with session_scope(sessions) as db:
        sharing = await store.set_sharing(db, group_id, user_id, paused, precision, now)
    message = {"type": "member_sharing", "group_id": group_id, "user_id": user_id,
               "paused": sharing.paused, "precision": sharing.precision.value}
    await bus.publish(group_topic(group_id), message)
    return message


async def run_retention(
    session_factory: SessionFactory, days: float, now: float,
    group_cutoffs: Mapping[int, float] | None = None,
) -> int:
    """One retention pass (history and events older than ``days``, per-group overrides);
    returns the number of location points deleted."""
    async with session_scope(session_factory) as db:
        return await store.apply_retention(db, now, days, group_cutoffs)


class LocationService:
    """The location use cases both edges call (REST routes and WebSocket handlers).

    Built once in the composition root. ``report_fix`` is the one path a fix
    takes: validated by ``parse_fix`` (the one validator), rate-limited per
    sender, then stored and published for account holders. Guests' fixes are
    only validated and limited: they live in the nearby index, never here.
    """

    def __init__(self, sessions: SessionFactory, bus: Bus, limiter: FixLimiter,
                 sos_limiter: Limiter | None = None) -> None:
        self.sessions = sessions
        self.bus = bus
        self.limiter = limiter
        self.sos_limiter = sos_limiter or LocalLimiter(SOS_RATE_PER_S, SOS_BURST)

    async def report_fix(
        self, sender: str, user_id: int | None, data: Mapping[str, Any], now: float
    ) -> tuple[Fix, list[dict[str, Any]]]:
        """Validate and limit one fix; store and publish it if ``user_id`` is an account.

        Returns the fix and the place events it caused (already published)."""
        fix = parse_fix(data, now)
        await self.limiter.check(sender, now)
        if user_id is None:
            return fix, []
        return fix, await publish_fix(self.sessions, self.bus, user_id, fix, now)

    async def raise_sos(self, user_id: int, now: float) -> list[dict[str, Any]]:
        """Alert the user's groups; ``RateLimited`` past ``SOS_BURST`` (then one a minute).

        The groups already hold the earlier alerts (events and pushes), so a
        refused one loses nothing; its error says when the next may go.
        """
        retry_s = await self.sos_limiter.take(str(user_id), now)
        if retry_s > 0.0:
            raise RateLimited(
                f"your groups already have your SOS; another can be sent in {retry_s:.0f} s",
                detail={"retry_after_s": round(retry_s, 3)},
            )
        return await raise_sos(self.sessions, self.bus, user_id, now)

    async def change_sharing(
        self, group_id: int, user_id: int, paused: bool, precision: str, now: float
    ) -> dict[str, Any]:
        return await change_sharing(
            self.sessions, self.bus, group_id, user_id, paused, precision, now
        )

    async def run_retention(
        self, days: float, now: float, group_cutoffs: Mapping[int, float] | None = None
    ) -> int:
        return await run_retention(self.sessions, days, now, group_cutoffs)
