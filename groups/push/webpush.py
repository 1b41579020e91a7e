"""Web Push (browsers, the PWA): VAPID (RFC 8292) + aes128gcm encryption (RFC 8291).

A browser's "device token" is its push subscription, ``{"endpoint", "keys":
{"p256dh", "auth"}}``, registered through ``POST /api/devices`` with platform
``web`` (``groups.push.messages.clean_web_subscription`` checks and compacts
it). ``pywebpush`` encrypts the payload for the subscription's keys (via
``http_ece``) and signs the VAPID JWT with ``py_vapid``; the POST goes out on
our own aiohttp session, and the answer is classified here as the dispatcher
expects: 201/202 delivered; 404/410 the subscription is gone (drop it); 429
and 5xx retry; anything else (400, 401/403 VAPID trouble, 413) failed.

The payload the service worker receives (``clients/web/sw.js``)::

    {"title": .., "body": .., "tag": collapse id or null, "data": {"category": .., ...}}
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid

from common.errors import BadRequest
from groups.push.messages import PushMessage
from groups.push.senders import SendResult

if TYPE_CHECKING:  # aiohttp and pywebpush (~12 MB) load with the first push sent
    import aiohttp

logger = logging.getLogger(__name__)

WEBPUSH_TTL_S = 24 * 3600          # how long the push service keeps an undelivered push
WEBPUSH_TIMEOUT_S = 10.0
VAPID_JWT_TTL_S = 12 * 3600        # RFC 8292: at most 24 h
TOPIC_MAX_CHARS = 32               # RFC 8030 Topic header (base64url alphabet)
GONE_STATUSES = frozenset({404, 410})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class VapidKeys:
    private_key: str
    """base64url of the raw 32-byte P-256 private key (``DISCO_VAPID_PRIVATE_KEY``)."""
    public_key: str
    """base64url of the uncompressed public point: the browser's ``applicationServerKey``."""

    @classmethod
    def generate(cls) -> VapidKeys:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls.from_private(b64url(key.private_numbers().private_value.to_bytes(32, "big")))

    @classmethod
    def from_private(cls, private_key: str) -> VapidKeys:
        """Check a configured key and derive its public half (BadRequest if it is not one)."""
        try:
            vapid = Vapid.from_string(private_key=private_key.strip())
        except Exception as exc:  # py_vapid raises bare ValueError/TypeError variants
            raise BadRequest(f"not a VAPID private key (base64url P-256): {exc}") from None
        public = vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return cls(private_key.strip(), b64url(public))


def check_settings(private_key: str | None, subject: str) -> None:
    """Raise BadRequest now, at start-up, for a key or subject the sender would refuse."""
    if private_key:
        VapidKeys.from_private(private_key)
        WebPushSender.check_subject(subject)


def webpush_payload(message: PushMessage) -> str:
    return json.dumps({"title": message.title, "body": message.body,
                       "tag": message.collapse_id, "data": message.payload_data()},
                      separators=(",", ":"))


def classify(status: int) -> SendResult:
    if status in (200, 201, 202):
        return SendResult.delivered
    if status in GONE_STATUSES:
        return SendResult.invalid_token
    if status == 429 or status >= 500:
        return SendResult.retry
    return SendResult.failed


def _topic(collapse_id: str | None) -> str | None:
    """A collapse id as an RFC 8030 Topic (32 base64url characters at most), or None."""
    if not collapse_id:
        return None
    topic = "".join(c if c.isalnum() or c in "-_" else "_" for c in collapse_id)
    return topic[:TOPIC_MAX_CHARS]


class WebPushSender:
    name = "webpush"

    def __init__(self, keys: VapidKeys, subject: str, *,
                 timeout_s: float = WEBPUSH_TIMEOUT_S) -> None:
        self.check_subject(subject)
        self.keys = keys
        self.subject = subject
        self._vapid = Vapid.from_string(private_key=keys.private_key)
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def check_subject(subject: str) -> None:
        if not subject.startswith(("mailto:", "https://", "http://")):
            raise BadRequest("the VAPID subject must be a mailto: or https:// URL")

    def _headers(self, endpoint: str, message: PushMessage, now: float) -> dict[str, str]:
        parts = urlsplit(endpoint)
        claims: dict[str, Any] = {"aud": f"{parts.scheme}://{parts.netloc}",
                                  "exp": int(now) + VAPID_JWT_TTL_S, "sub": self.subject}
        headers = {k: str(v) for k, v in self._vapid.sign(claims).items()}
        headers["Urgency"] = "high" if message.urgent else "normal"
        if (topic := _topic(message.collapse_id)) is not None:
            headers["Topic"] = topic
        return headers

    async def send(self, token: str, message: PushMessage) -> SendResult:
        try:
            subscription = json.loads(token)
            endpoint = str(subscription["endpoint"])
        except (ValueError, KeyError, TypeError):
            logger.info("webpush: a stored subscription is not JSON: %s…", token[:24])
            return SendResult.invalid_token
        import aiohttp  # here: a node that never pushes never loads them
        from pywebpush import WebPusher

        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            pusher = WebPusher(subscription, aiohttp_session=self._session)
            response = await pusher.send_async(
                webpush_payload(message), self._headers(endpoint, message, time.time()),
                ttl=WEBPUSH_TTL_S, content_encoding="aes128gcm", timeout=timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.info("webpush: %s to %s: %s", type(exc).__name__, endpoint[:40], exc)
            return SendResult.retry
        except Exception as exc:  # bad keys in the subscription: encryption fails
            logger.info("webpush: cannot encrypt for %s: %s", endpoint[:40], exc)
            return SendResult.invalid_token
        assert not isinstance(response, str)
        outcome = classify(response.status)
        if outcome is not SendResult.delivered:
            logger.info("webpush: %s from %s", response.status, endpoint[:40])
        return outcome

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
