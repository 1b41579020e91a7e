"""Ephemeral room chat: short texts kept for 30 minutes, then gone. Pure.

Why in memory and not in the database: the messages are meant to vanish;
never writing them anywhere durable is the simplest way to keep that promise.
A room is any string (``group:12``, ``nearby``). In a nearby room a message
reaches exactly the people who can hear the sender at that moment, so each
message remembers its recipients and ``recent`` only shows a viewer the
messages they received.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from common.errors import BadRequest, MessageTooLarge
from groups.ratelimit import TokenBucket

log = logging.getLogger(__name__)

CHAT_TTL_S = 30 * 60.0
CHAT_MAX_CHARS = 500
CHAT_RATE_PER_S = 1.0
CHAT_BURST = 5
ROOM_MAX_MESSAGES = 1_000  # per room; the oldest go first if a room is that busy
_ALLOWED_CONTROL = frozenset("\n\t")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    id: int
    room: str
    sender: str
    text: str
    ts: float
    recipients: frozenset[str] | None = None  # None: everyone in the room

    def visible_to(self, viewer: str) -> bool:
        return self.recipients is None or viewer == self.sender or viewer in self.recipients

    def to_json(self) -> dict[str, Any]:
        # ``message_id``, not ``id``: a top-level ``id`` is the receiver's own request id
        return {"type": "chat", "message_id": self.id, "room": self.room, "from": self.sender,
                "text": self.text, "ts": self.ts}


def clean_text(text: object) -> str:
    """Trimmed message text, or BadRequest / MessageTooLarge."""
    if not isinstance(text, str):
        raise BadRequest("text must be a string", detail={"field": "text"})
    text = text.strip()
    if not text:
        raise BadRequest("text must not be empty", detail={"field": "text"})
    if len(text) > CHAT_MAX_CHARS:
        raise MessageTooLarge(
            f"chat messages are at most {CHAT_MAX_CHARS} characters (got {len(text)})",
            detail={"field": "text", "limit": CHAT_MAX_CHARS},
        )
    if any(not (ch.isprintable() or ch in _ALLOWED_CONTROL) for ch in text):
        raise BadRequest("text contains control characters", detail={"field": "text"})
    return text


class ChatLog:
    """Every room's recent messages on this node, with the per-sender rate limit."""

    def __init__(
        self,
        ttl_s: float = CHAT_TTL_S,
        rate_per_s: float = CHAT_RATE_PER_S,
        burst: int = CHAT_BURST,
    ) -> None:
        self.ttl_s = ttl_s
        self._rooms: dict[str, deque[ChatMessage]] = {}
        self._limiter = TokenBucket(rate_per_s, burst, what="chat messages")
        self._ids = itertools.count(1)

    def post(
        self, room: str, sender: str, text: object, now: float,
        recipients: Iterable[str] | None = None,
    ) -> ChatMessage:
        """Validate, rate-limit and keep a message; raises before storing anything."""
        cleaned = clean_text(text)
        self._limiter.check(sender, now)
        message = ChatMessage(
            next(self._ids), room, sender, cleaned, now,
            frozenset(recipients) if recipients is not None else None,
        )
        queue = self._rooms.setdefault(room, deque(maxlen=ROOM_MAX_MESSAGES))
        queue.append(message)
        self._expire_room(room, now)
        return message

    def recent(self, room: str, now: float, viewer: str | None = None) -> list[ChatMessage]:
        """Unexpired messages of a room, oldest first (only those ``viewer`` received)."""
        self._expire_room(room, now)
        queue = self._rooms.get(room, ())
        return [m for m in queue if viewer is None or m.visible_to(viewer)]

    def expire(self, now: float) -> int:
        """Drop every expired message; returns how many went."""
        dropped = 0
        for room in list(self._rooms):
            dropped += self._expire_room(room, now)
        return dropped

    def _expire_room(self, room: str, now: float) -> int:
        queue = self._rooms.get(room)
        if queue is None:
            return 0
        cutoff = now - self.ttl_s
        dropped = 0
        while queue and queue[0].ts <= cutoff:
            queue.popleft()
            dropped += 1
        if not queue:
            del self._rooms[room]
        return dropped
