"""APNs with token (.p8) authentication, over HTTP/2, via aioapns.

apns2 does not import on Python 3.11 (its ``hyper`` dependency is dead and it
pins PyJWT < 2); aioapns speaks the same HTTP/2 API on asyncio with h2.

aioapns dials ``protocol_class.APNS_SERVER:APNS_PORT``; ``server=(host, port)``
swaps in a protocol class with another address, which is how tests reach a
local HTTP/2 stand-in (with ``ssl_context`` trusting its certificate). The
client is created lazily because aioapns binds to the running event loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from typing import Any

from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import APNsTLSClientProtocol
from aioapns.exceptions import ConnectionClosed, ConnectionError, MaxAttemptsExceeded

from groups.push.messages import PushMessage
from groups.push.senders import SendResult

logger = logging.getLogger(__name__)

APNS_SEND_TIMEOUT_S = 10.0
APNS_TTL_S = 3600  # an undelivered push older than an hour is no longer news
APNS_PRIORITY_URGENT = 10
APNS_PRIORITY_NORMAL = 5
INVALID_TOKEN_REASONS = frozenset({"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"})


def apns_payload(message: PushMessage) -> dict[str, Any]:
    aps: dict[str, Any] = {
        "alert": {"title": message.title, "body": message.body},
        "sound": "default",
        "category": message.category.value,
    }
    if message.thread_id:
        aps["thread-id"] = message.thread_id
    if message.urgent:
        aps["interruption-level"] = "time-sensitive"
    return {"aps": aps, **message.payload_data()}


def classify(result: NotificationResult) -> SendResult:
    if result.is_successful:
        return SendResult.delivered
    status = int(result.status) if str(result.status).isdigit() else 0
    if status == 410 or result.description in INVALID_TOKEN_REASONS:
        return SendResult.invalid_token
    if status == 429 or status >= 500:
        return SendResult.retry
    return SendResult.failed


async def _quiet(_request: NotificationRequest, _result: NotificationResult) -> None:
    """aioapns logs every failure at error level; the dispatcher logs them instead."""


class ApnsSender:
    name = "apns"

    def __init__(self, *, key: str, key_id: str, team_id: str, topic: str,
                 use_sandbox: bool = True, server: tuple[str, int] | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 timeout_s: float = APNS_SEND_TIMEOUT_S) -> None:
        self._options = {"key": key, "key_id": key_id, "team_id": team_id, "topic": topic,
                         "use_sandbox": use_sandbox}
        self._server = server
        self._ssl_context = ssl_context
        self._timeout_s = timeout_s
        self._client: APNs | None = None

    def _get_client(self) -> APNs:
        if self._client is None:
            context = self._ssl_context or ssl.create_default_context()
            context.set_alpn_protocols(["h2"])
            client = APNs(**self._options, ssl_context=context,  # type: ignore[arg-type]
                          max_connection_attempts=1, err_func=_quiet)
            if self._server is not None:
                host, port = self._server
                client.pool.protocol_class = type(
                    "LocalAPNsProtocol", (APNsTLSClientProtocol,),
                    {"APNS_SERVER": host, "APNS_PORT": port},
                )
            self._client = client
        return self._client

    async def send(self, token: str, message: PushMessage) -> SendResult:
        request = NotificationRequest(
            device_token=token,
            message=apns_payload(message),
            notification_id=str(uuid.uuid4()),
            time_to_live=APNS_TTL_S,
            priority=APNS_PRIORITY_URGENT if message.urgent else APNS_PRIORITY_NORMAL,
            collapse_key=message.collapse_id,
            push_type=PushType.ALERT,
        )
        try:
            result = await asyncio.wait_for(self._get_client().send_notification(request),
                                            self._timeout_s)
        except (ConnectionError, ConnectionClosed, MaxAttemptsExceeded, OSError,
                TimeoutError) as exc:
            logger.info("apns: %s to %s…: %s", type(exc).__name__, token[:8], exc)
            return SendResult.retry
        outcome = classify(result)
        if outcome is not SendResult.delivered:
            logger.info("apns: %s %s for %s…", result.status, result.description, token[:8])
        return outcome

    async def close(self) -> None:
        if self._client is not None:
            self._client.pool.close()
            self._client = None
