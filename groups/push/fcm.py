"""FCM HTTP v1 with a service account, via pyfcm 2.x.

pyfcm is synchronous (requests), so each send runs in a worker thread
(``asyncio.to_thread``). Its built-in urllib3 retries are switched off with a
plain adapter so that retries and backoff happen once, in the dispatcher.
The OAuth access token comes from the service account's ``token_uri`` (google
-auth); ``endpoint_base`` replaces https://fcm.googleapis.com, which is how
tests point both at local stand-ins.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import requests
from google.auth.exceptions import GoogleAuthError, TransportError
from google.auth.transport import Request
from google.oauth2 import service_account
from pyfcm import FCMNotification
from pyfcm.errors import (
    AuthenticationError,
    FCMNotRegisteredError,
    FCMSenderIdMismatchError,
    FCMServerError,
    InvalidDataError,
)
from requests.adapters import HTTPAdapter

from groups.push.messages import PushMessage
from groups.push.senders import SendResult

logger = logging.getLogger(__name__)

FCM_SEND_TIMEOUT_S = 10.0
FCM_TTL = "3600s"
# FCM answers 400 INVALID_ARGUMENT for a malformed token and 404 UNREGISTERED for a stale one
INVALID_TOKEN_MARKERS = ("UNREGISTERED", "not a valid FCM registration token")


def android_config(message: PushMessage) -> dict[str, Any]:
    config: dict[str, Any] = {"priority": "high" if message.urgent else "normal", "ttl": FCM_TTL}
    if message.collapse_id:
        config["collapse_key"] = message.collapse_id
    notification: dict[str, Any] = {"channel_id": message.category.value}
    if message.thread_id:
        notification["tag"] = message.thread_id
    config["notification"] = notification
    return config


FCM_SCOPES = ["https://www.googleapis.com/auth/firebase.messaging"]


class SharedCredentials(service_account.Credentials):  # type: ignore[misc]
    """Service-account credentials safe to share between pyfcm's worker threads.

    pyfcm refreshes the token from every new thread; unguarded, two threads
    refreshing at once can read a half-updated token (None). One lock, and no
    refresh while the token is still valid: one token request, not one per thread.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refresh_lock = threading.Lock()

    def refresh(self, request: Request) -> None:
        with self._refresh_lock:
            if self.valid:
                return
            super().refresh(request)


class FcmSender:
    name = "fcm"

    def __init__(self, *, service_account_file: str, project_id: str | None = None,
                 endpoint_base: str | None = None,
                 timeout_s: float = FCM_SEND_TIMEOUT_S) -> None:
        try:
            credentials = SharedCredentials.from_service_account_file(
                service_account_file, scopes=FCM_SCOPES
            )
        except (OSError, ValueError, GoogleAuthError) as exc:
            raise ValueError(f"FCM service account file {service_account_file}: {exc}") from exc
        self._fcm = FCMNotification(credentials=credentials, project_id=project_id,
                                    adapter=HTTPAdapter(max_retries=0))
        if endpoint_base:
            self._fcm.FCM_END_POINT_BASE = endpoint_base.rstrip("/") + "/v1/projects"
        self._timeout_s = timeout_s

    def _send_sync(self, token: str, message: PushMessage) -> SendResult:
        try:
            self._fcm.notify(
                fcm_token=token,
                notification_title=message.title,
                notification_body=message.body,
                data_payload=message.payload_data(),
                android_config=android_config(message),
                timeout=self._timeout_s,
            )
        except FCMNotRegisteredError:
            return SendResult.invalid_token
        except InvalidDataError as exc:
            if exc.args and isinstance(exc.args[0], TransportError):
                logger.info("fcm: could not reach the OAuth token endpoint: %s", exc)
                return SendResult.retry
            if any(marker in str(exc) for marker in INVALID_TOKEN_MARKERS):
                return SendResult.invalid_token
            logger.warning("fcm: refused message for %s…: %s", token[:8], str(exc)[:300])
            return SendResult.failed
        except FCMServerError as exc:
            logger.info("fcm: server error for %s…: %s", token[:8], exc)
            return SendResult.retry
        except (AuthenticationError, FCMSenderIdMismatchError) as exc:
            # a 403 can also be a misconfigured project: never delete tokens on it
            logger.warning("fcm: %s: %s", type(exc).__name__, exc)
            return SendResult.failed
        except requests.RequestException as exc:
            logger.info("fcm: %s for %s…: %s", type(exc).__name__, token[:8], exc)
            return SendResult.retry
        return SendResult.delivered

    async def send(self, token: str, message: PushMessage) -> SendResult:
        return await asyncio.to_thread(self._send_sync, token, message)

    async def close(self) -> None:
        return None
