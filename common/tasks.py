"""Stopping a node's background tasks for sure.

A loop task stops when it is cancelled: the ``CancelledError`` raised at its
current ``await`` unwinds it. A library that catches that error inside one of
its calls (seen here: a heartbeat stuck in its loop after its cancel arrived
mid-call to redis-py, so that a node's shutdown waited for it forever) leaves
the task running as if nothing had been asked. ``cancel_and_wait`` asks again
until the task has ended, so every shutdown ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_AFTER_S = 0.5
"""How long a cancelled task gets to end before it is cancelled again."""


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None,
                          recancel_after_s: float = RECANCEL_AFTER_S) -> None:
    """Cancel ``tasks`` and return once every one has ended (its outcome is dropped)."""
    given = [task for task in tasks if task is not None]
    while pending := [task for task in given if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=recancel_after_s)
    for task in given:
        if not task.cancelled():
            with contextlib.suppress(Exception):
                task.exception()  # retrieved: no "exception was never retrieved" warning
