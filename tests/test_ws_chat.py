"""Group room chat on one node (the in-process bus): each other participant gets it
once, the sender gets ``chat_sent`` and no echo, a member outside the room nothing."""

from __future__ import annotations

import asyncio

import pytest

from common.settings import Settings
from tests.server_helpers import live_server


async def test_group_chat_reaches_the_room_once(settings: Settings) -> None:
    async with live_server(settings) as server:
        tokens = [(await server.register(name))[0] for name in ("ann", "bob", "cat", "dan")]
        group = await server.group_with(*tokens)
        room = f"group:{group}"
        ann, bob, cat, dan = [await server.connect(t) for t in tokens]
        for ws in (ann, bob, cat):
            await ws.request({"type": "join", "room": room}, "joined")

        sent = await ann.request({"type": "chat", "room": room, "text": "at the lift"},
                                 "chat_sent")
        assert sent["recipients"] == 2
        for ws in (bob, cat):
            got = await ws.expect("chat", room=room)
            assert got["text"] == "at the lift" and got["from"] == sent["from"]
            assert got["display_name"] == "ann"
        await asyncio.sleep(0.3)  # a second copy (or an echo) would have arrived by now
        for ws in (ann, bob, cat, dan):
            with pytest.raises(TimeoutError):
                await ws.expect("chat", timeout_s=0.2)
        for ws in (ann, bob, cat, dan):
            await ws.close()
