"""The relay's writer: what queued up goes out together, a broadcast once per node.

``coalesce`` is pure: table tests of grouping and of the one rule that keeps
each link's messages in order. Then through real Redis: a room event for 30
members relayed from one node is one publish, and every member gets it once,
in order behind the messages queued before it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from common.bus import RedisBus
from protocol import wire
from signaling.cluster.local import LocalCluster
from signaling.ws.relay import Relay, coalesce, topic

EVENT = wire.Shared({"type": "participant_muted", "room": "group:1"})
OTHER = wire.Shared({"type": "participant_left", "room": "group:1"})


def out(link: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"op": "out", "link": link, "message": message}


def test_a_broadcast_goes_once_per_node() -> None:
    queued = [("relay:a", out("l1", EVENT)), ("relay:b", out("l2", EVENT)),
              ("relay:a", out("l3", EVENT)), ("relay:a", out("l4", EVENT))]
    assert coalesce(queued) == {
        "relay:a": [{"op": "out", "links": ["l1", "l3", "l4"], "message": EVENT}],
        "relay:b": [out("l2", EVENT)],
    }


def test_equal_but_distinct_messages_are_not_merged() -> None:
    """Only the same object is one event (a reply that looks alike is its own)."""
    a, b = {"type": "pong"}, {"type": "pong"}
    assert coalesce([("t", out("l1", a)), ("t", out("l2", b))]) == {
        "t": [out("l1", a), out("l2", b)]}


def test_a_link_keeps_its_order() -> None:
    """l2's EVENT joins l1's (nothing for l2 in between); l1's second EVENT may not: it
    would jump ahead of l1's OTHER, so it stays where it was."""
    queued = [("t", out("l1", EVENT)), ("t", out("l1", OTHER)), ("t", out("l2", EVENT)),
              ("t", out("l1", EVENT))]
    assert coalesce(queued) == {"t": [
        {"op": "out", "links": ["l1", "l2"], "message": EVENT},
        out("l1", OTHER),
        out("l1", EVENT),
    ]}


def test_other_messages_keep_their_place() -> None:
    msg = {"op": "msg", "link": "l9", "origin": "x", "identity": {}, "message": {}}
    close = {"op": "close", "link": "l9"}
    queued = [("t", msg), ("t", out("l1", EVENT)), ("t", close), ("t", out("l2", EVENT))]
    assert coalesce(queued) == {"t": [
        msg, {"op": "out", "links": ["l1", "l2"], "message": EVENT}, close]}


class Inbox:
    """A session on the accepting node: what its client would be sent."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.identity = None
        self.participants: dict[str, Any] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.got.append(message)


@pytest.mark.parametrize("members", [30])
async def test_a_relayed_broadcast_is_one_publish(redis_url: str, redis_prefix: str,
                                                  members: int) -> None:
    bus = RedisBus(redis_url, redis_prefix)
    await bus.start()
    published: list[tuple[str, dict[str, Any]]] = []
    real_publish = bus.publish

    async def counting(to: str, message: dict[str, Any]) -> int:
        published.append((to, message))
        return await real_publish(to, message)

    try:
        accepting = Relay("a", bus, LocalCluster("a", lambda: 0.0), lambda: None,  # type: ignore[arg-type, return-value]
                          {})
        hosting = Relay("m", bus, LocalCluster("m", lambda: 0.0), lambda: None,  # type: ignore[arg-type, return-value]
                        {})
        await accepting.start()
        await hosting.start()
        sessions = [Inbox() for _ in range(members)]
        links = [accepting.open(s, "group:1", "m") for s in sessions]  # type: ignore[arg-type]
        bus.publish = counting  # type: ignore[method-assign]
        # each member first gets a reply of its own, then all get one room event
        for i, link in enumerate(links):
            hosting.post(topic("a"), out(link.link_id, {"type": "pong", "id": i}))
        for link in links:
            hosting.post(topic("a"), out(link.link_id, EVENT))
        for _ in range(100):
            if all(len(s.got) == 2 for s in sessions):
                break
            await asyncio.sleep(0.02)
        assert [s.got for s in sessions] == [[{"type": "pong", "id": i}, EVENT]
                                             for i in range(members)]
        assert len(published) == 1  # 60 messages, one node: one publish
        items = published[0][1]["items"]
        assert len(items) == members + 1  # the replies, then the event once for all
        assert items[-1]["links"] == [link.link_id for link in links]
    finally:
        bus.publish = real_publish  # type: ignore[method-assign]
        await accepting.close()
        await hosting.close()
        await bus.close()
