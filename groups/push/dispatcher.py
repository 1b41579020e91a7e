"""Sends pushes in the background, with retries and backoff, and forgets dead tokens.

``notify(user_ids, message)`` returns at once: a request handler or room event
must never wait on Apple or Google. The work (``deliver``) looks up the
users' devices, drops users who muted the category, and sends to every
device concurrently (bounded). Each send is retried on 5xx/429/connection
trouble with exponential backoff and jitter, up to ``max_attempts``; tokens
the service calls invalid are deleted from the database right away.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from common.db import SessionFactory, session_scope
from groups.push import store
from groups.push.messages import Platform, PushMessage
from groups.push.models import PushDevice
from groups.push.senders import PushSender, SendResult

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
MAX_CONCURRENT_SENDS = 32
CLOSE_GRACE_S = 5.0  # pending pushes get this long to finish at shutdown

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class DeliveryReport:
    """What one ``deliver`` call did, per token; for logs and tests."""

    results: dict[str, SendResult] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    muted_users: set[int] = field(default_factory=set)
    deleted_tokens: list[str] = field(default_factory=list)
    skipped_tokens: list[str] = field(default_factory=list)  # no sender for the platform

    def count(self, result: SendResult) -> int:
        return sum(1 for r in self.results.values() if r is result)


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter (AWS): uniform in [0, min(max, base * 2**attempt)] — spreads retries out."""
    return rng.uniform(0, min(max_s, base_s * (2 ** attempt)))


class PushDispatcher:
    def __init__(
        self,
        sessions: SessionFactory,
        senders: Mapping[Platform, PushSender],
        *,
        max_attempts: int = MAX_ATTEMPTS,
        base_backoff_s: float = BASE_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.sessions = sessions
        self.senders = dict(senders)
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_SENDS)
        self._tasks: set[asyncio.Task[DeliveryReport]] = set()

    def notify(self, user_ids: Iterable[int], message: PushMessage) -> None:
        """Push ``message`` to every device of ``user_ids``, in the background."""
        users = sorted(set(user_ids))
        if not users:
            return
        task = asyncio.get_running_loop().create_task(self.deliver(users, message))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[DeliveryReport]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("push delivery failed", exc_info=exc)

    async def deliver(self, user_ids: Iterable[int], message: PushMessage) -> DeliveryReport:
        """Do the work of ``notify`` now and report per token."""
        users = set(user_ids)
        report = DeliveryReport()
        async with session_scope(self.sessions) as session:
            report.muted_users = await store.users_muting(session, users, message.category)
            devices = await store.devices_for(session, users - report.muted_users)
        await asyncio.gather(*(self._deliver_one(d, message, report) for d in devices))
        invalid = [t for t, r in report.results.items() if r is SendResult.invalid_token]
        if invalid:
            async with session_scope(self.sessions) as session:
                await store.delete_tokens(session, invalid)
            report.deleted_tokens = invalid
            logger.info("push: removed %d invalid device token(s)", len(invalid))
        logger.debug("push %s to %d user(s): %s", message.category.value, len(users),
                     {r.value: report.count(r) for r in SendResult})
        return report

    async def _deliver_one(self, device: PushDevice, message: PushMessage,
                           report: DeliveryReport) -> None:
        sender = self.senders.get(Platform(device.platform))
        if sender is None:
            report.skipped_tokens.append(device.token)
            return
        result = SendResult.retry
        attempt = 0
        while attempt < self.max_attempts:
            if attempt:
                await self._sleep(backoff_s(attempt - 1, self.base_backoff_s,
                                            self.max_backoff_s, self._rng))
            attempt += 1
            async with self._limit:
                try:
                    result = await sender.send(device.token, message)
                except Exception:  # a sender bug must not kill the other deliveries
                    logger.exception("push sender %s raised", sender.name)
                    result = SendResult.retry
            if result is not SendResult.retry:
                break
        if result is SendResult.retry:
            logger.warning("push: gave up on %s… after %d attempts", device.token[:8], attempt)
        report.results[device.token] = result
        report.attempts[device.token] = attempt

    async def drain(self) -> None:
        """Wait for every background delivery started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Let pending pushes finish briefly, then cancel the rest and close senders."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=CLOSE_GRACE_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                logger.warning("push: %d delivery task(s) cancelled at shutdown", len(pending))
        for sender in {id(s): s for s in self.senders.values()}.values():
            await sender.close()
