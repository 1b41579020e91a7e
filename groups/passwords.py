"""Password hashing (argon2id) off the event loop, with bounded concurrency.

One argon2 check costs ~0.2 s of CPU here (64 MiB, 3 passes). Run on the
event loop, 1.5 wrong passwords a second stalled every WebSocket (issue #12,
finding 3); so hashing and checking run in threads (argon2-cffi releases
the GIL), at most ``workers`` at once so the loop keeps a core, and at most
``max_waiting`` more may queue. A caller beyond that gets ``Unavailable``
(503, ``retry_after_s``) at once instead of piling up behind the others.

The threads are this pool's own (not the loop's default executor, which
``asyncio.to_thread`` shares with everything else) and run at a lower CPU
priority (nice +``HASH_NICENESS``, inherited by argon2's lane threads):
when cores are short, the event loop, and so voice and pings, goes first
and password checks wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from common.errors import Unavailable

BUSY_RETRY_AFTER_S = 1.0
WAITING_PER_WORKER = 4
HASH_NICENESS = 10

_hasher = PasswordHasher()
# Checked against when a username does not exist, so timing does not tell.
_DUMMY_HASH = _hasher.hash("not-a-real-password-0")


def default_workers() -> int:
    """Half the cores, at least one: the other half serves the event loop and media."""
    return max(1, (os.cpu_count() or 1) // 2)


def hash_now(password: str) -> str:
    """Hash on the calling thread (for tools and tests that have no event loop)."""
    return _hasher.hash(password)


def _lower_priority() -> None:
    """Runs in each hashing thread: Linux niceness is per thread and inherited."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)


def _verify(stored: str | None, password: str) -> bool:
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return stored is not None


class PasswordHashing:
    """argon2id in worker threads: ``workers`` at once, ``max_waiting`` queued, no more."""

    def __init__(self, workers: int | None = None, max_waiting: int | None = None) -> None:
        self.workers = workers if workers is not None else default_workers()
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        self.max_waiting = (max_waiting if max_waiting is not None
                            else WAITING_PER_WORKER * self.workers)
        if self.max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self._slots = asyncio.Semaphore(self.workers)
        self._admitted = 0  # running + waiting
        self.refused = 0
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="argon2",
                                           initializer=_lower_priority)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    @property
    def in_flight(self) -> int:
        return self._admitted

    def _admit(self) -> None:
        if self._admitted >= self.workers + self.max_waiting:
            self.refused += 1
            raise Unavailable("the server is busy checking passwords; try again shortly",
                              detail={"retry_after_s": BUSY_RETRY_AFTER_S})
        self._admitted += 1

    async def hash(self, password: str) -> str:
        self._admit()
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._threads, _hasher.hash, password)
        finally:
            self._admitted -= 1

    async def verify(self, stored: str | None, password: str) -> bool:
        """True if ``password`` matches ``stored``; None (no such user) costs the same, False."""
        self._admit()
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._threads, _verify, stored, password)
        finally:
            self._admitted -= 1
