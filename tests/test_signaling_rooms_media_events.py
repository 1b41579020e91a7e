"""Media events about one participant's own connection reach that participant only."""

from __future__ import annotations

from signaling.rooms import RoomRegistry
from tests.test_nearby_plan import Inbox as FakeConnection


async def test_quality_and_peer_state_go_to_their_participant_speaking_to_all() -> None:
    registry = RoomRegistry()
    alice, bob = FakeConnection("1", "Alice"), FakeConnection("2", "Bob")
    a = await registry.join("group:1", alice)
    await registry.join("group:1", bob)
    alice.messages.clear()
    bob.messages.clear()
    # what the media room's on_event hands the registry (sfu.room.MediaRoom._emit)
    registry._media_event("group:1", {"type": "quality", "participant_id": a.participant_id,
                                      "quality": "poor", "loss_percent": 12.0,
                                      "jitter_ms": 20.0, "rtt_ms": 80.0})
    registry._media_event("group:1", {"type": "peer_state", "participant_id": a.participant_id,
                                      "state": "connected"})
    registry._media_event("group:1", {"type": "speaking", "participant_id": a.participant_id})
    assert [m["type"] for m in alice.messages] == ["quality", "peer_state", "speaking"]
    assert alice.messages[0]["room"] == "group:1" and alice.messages[0]["quality"] == "poor"
    assert [m["type"] for m in bob.messages] == ["speaking"]
