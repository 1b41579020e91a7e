"""The push sender protocol, the log-only sender, and the factory that picks senders.

A sender delivers one message to one token and says what happened; it never
retries (the dispatcher owns retries and backoff, so the policy lives in one
place) and never raises for a delivery problem.

``make_senders(settings)``: APNs when its four settings are present, FCM when
its service account is; in dev mode a platform without credentials gets the
log-only sender, in production it gets none and its devices are skipped (with
one warning at start-up).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Protocol

from common.settings import Settings
from groups.push.messages import Platform, PushMessage

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


def make_senders(settings: Settings) -> dict[Platform, PushSender]:
    senders: dict[Platform, PushSender] = {}
    apns_fields = (settings.apns_key_file, settings.apns_key_id, settings.apns_team_id,
                   settings.apns_topic)
    if all(apns_fields):
        from groups.push.apns import ApnsSender

        assert settings.apns_key_file is not None
        senders[Platform.ios] = ApnsSender(
            key=settings.apns_key_file.read_text(encoding="utf-8"),
            key_id=str(settings.apns_key_id), team_id=str(settings.apns_team_id),
            topic=str(settings.apns_topic), use_sandbox=settings.apns_use_sandbox,
        )
    elif any(apns_fields):
        logger.warning("APNs is partly configured: set DISCO_APNS_KEY_FILE, DISCO_APNS_KEY_ID, "
                       "DISCO_APNS_TEAM_ID and DISCO_APNS_TOPIC together")
    if settings.vapid_private_key:
        from groups.push.webpush import VapidKeys, WebPushSender

        senders[Platform.web] = WebPushSender(
            VapidKeys.from_private(settings.vapid_private_key),
            settings.vapid_subject or settings.public_url,
        )
    if settings.fcm_service_account_file is not None:
        from groups.push.fcm import FcmSender

        senders[Platform.android] = FcmSender(
            service_account_file=str(settings.fcm_service_account_file),
            project_id=settings.fcm_project_id,
        )
    for platform in Platform:
        if platform in senders:
            continue
        if settings.dev:
            senders[platform] = LogSender(platform.value)
        else:
            logger.warning("push to %s devices is off: no credentials configured", platform)
    return senders
