"""``common.tasks.cancel_and_wait``: a shutdown ends even when a task swallows its cancel.

The loop below does what the cluster heartbeat did in a CI run whose node
never finished stopping: its cancel arrived inside a library call that caught
the ``CancelledError``, and the loop went on beating. A plain ``cancel`` plus
``await`` waits for it forever; ``cancel_and_wait`` cancels again.
"""

from __future__ import annotations

import asyncio

import pytest

from common.tasks import cancel_and_wait


async def swallowing_loop(beats: list[int]) -> None:
    """A heartbeat whose "library call" eats the first cancel it gets."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)  # the library call
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True  # as a library that catches it and returns would
        beats.append(1)
        await asyncio.sleep(0.01)


async def test_a_plain_cancel_does_not_stop_a_loop_that_swallows_it() -> None:
    beats: list[int] = []
    task = asyncio.create_task(swallowing_loop(beats))
    await asyncio.sleep(0.03)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done and len(beats) > 3  # still beating: what hung the node's shutdown
    await cancel_and_wait(task)


async def test_cancel_and_wait_stops_it() -> None:
    beats: list[int] = []
    task = asyncio.create_task(swallowing_loop(beats))
    await asyncio.sleep(0.03)
    await asyncio.wait_for(cancel_and_wait(task, recancel_after_s=0.05), 5)
    assert task.cancelled()


async def test_ended_failed_and_missing_tasks_are_fine() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    failed = asyncio.create_task(fails())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait(failed, finished, None)  # no raise, no "never retrieved" warning
    assert failed.done() and finished.done()
    with pytest.raises(ValueError):
        failed.result()
