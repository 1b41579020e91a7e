"""Ephemeral chat: size and rate limits, 30-minute expiry, nearby recipients. Pure."""

from __future__ import annotations

import pytest

from common.errors import BadRequest, MessageTooLarge, RateLimited
from groups.chat import CHAT_BURST, CHAT_MAX_CHARS, CHAT_TTL_S, ChatLog

NOW = 1_800_000_000.0

BAD_TEXT = [
    ("x" * (CHAT_MAX_CHARS + 1), MessageTooLarge),
    ("", BadRequest),
    ("   \n ", BadRequest),
    ("bell\x07", BadRequest),
    (42, BadRequest),
    (None, BadRequest),
]


@pytest.mark.parametrize(("text", "error"), BAD_TEXT)
def test_bad_text_is_rejected_and_not_stored(text: object, error: type[Exception]) -> None:
    log = ChatLog()
    with pytest.raises(error):
        log.post("group:1", "u1", text, NOW)
    assert log.recent("group:1", NOW) == []


def test_max_length_is_accepted_and_trimmed() -> None:
    log = ChatLog()
    message = log.post("group:1", "u1", "  " + "é" * CHAT_MAX_CHARS + "\n", NOW)
    assert message.text == "é" * CHAT_MAX_CHARS
    assert log.post("group:1", "u1", "two\nlines", NOW).text == "two\nlines"


def test_too_fast_is_rate_limited_and_not_stored() -> None:
    log = ChatLog()
    for i in range(CHAT_BURST):
        log.post("nearby", "u1", f"m{i}", NOW)
    with pytest.raises(RateLimited):
        log.post("nearby", "u1", "one too many", NOW)
    assert [m.text for m in log.recent("nearby", NOW)] == [f"m{i}" for i in range(CHAT_BURST)]
    log.post("nearby", "u2", "someone else may talk", NOW)
    log.post("nearby", "u1", "later", NOW + 1.5)


def test_messages_vanish_after_30_minutes() -> None:
    log = ChatLog()
    log.post("group:1", "u1", "old", NOW)
    log.post("group:1", "u2", "newer", NOW + 600)
    assert [m.text for m in log.recent("group:1", NOW + CHAT_TTL_S - 1)] == ["old", "newer"]
    assert [m.text for m in log.recent("group:1", NOW + CHAT_TTL_S)] == ["newer"]
    assert log.expire(NOW + 600 + CHAT_TTL_S) == 1
    assert log.recent("group:1", NOW + 10_000) == []


def test_nearby_messages_reach_only_their_recipients() -> None:
    log = ChatLog()
    message = log.post("nearby", "a", "hello neighbours", NOW, recipients={"b", "c"})
    assert [m.id for m in log.recent("nearby", NOW, viewer="b")] == [message.id]
    assert log.recent("nearby", NOW, viewer="far-away") == []
    assert log.recent("nearby", NOW, viewer="a") == [message]  # the sender sees their own
    wire = message.to_json()
    # no coordinates, no list, and no top-level ``id`` (that is a request's)
    assert set(wire) == {"type", "message_id", "room", "from", "text", "ts"}
