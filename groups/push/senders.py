"""The push sender protocol and the log-only sender.

A sender delivers one message to one token and says what happened; it never
retries (the dispatcher owns retries and backoff, so the policy lives in one
place) and never raises for a delivery problem. ``groups.push.configure``
picks the senders from the settings.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Protocol

from groups.push.messages import PushMessage

logger = logging.getLogger(__name__)


class SendResult(StrEnum):
    delivered = "delivered"
    invalid_token = "invalid_token"  # APNs 410/BadDeviceToken, FCM UNREGISTERED: delete it
    retry = "retry"  # 5xx, 429, connection trouble: try again later
    failed = "failed"  # our fault or configuration (bad payload, auth): do not retry


class PushSender(Protocol):
    name: str

    async def send(self, token: str, message: PushMessage) -> SendResult: ...

    async def close(self) -> None: ...


class LogSender:
    """Dev-mode sender: logs what would be pushed and keeps it for inspection."""

    name = "log"

    def __init__(self, platform: str = "any") -> None:
        self.platform = platform
        self.sent: list[tuple[str, PushMessage]] = []

    async def send(self, token: str, message: PushMessage) -> SendResult:
        self.sent.append((token, message))
        logger.info("push (log only, %s) to %s…: [%s] %s: %s", self.platform, token[:8],
                    message.category.value, message.title, message.body)
        return SendResult.delivered

    async def close(self) -> None:
        return None
