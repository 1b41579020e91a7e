"""Which push senders a node uses, from its settings.

``make_senders(settings)``: APNs when its four settings are present, FCM when
its service account is, Web Push when it has a VAPID key; in dev mode a
platform without credentials gets the log-only sender, in production it gets
none and its devices are skipped (with one warning at start-up). The sender
modules import ``groups.push.senders`` and nothing imports them back but this
factory, which loads each only when it is configured.
"""

from __future__ import annotations

import logging

from common.settings import Settings
from groups.push.messages import Platform
from groups.push.senders import LogSender, PushSender

logger = logging.getLogger(__name__)


def make_senders(settings: Settings) -> dict[Platform, PushSender]:
    senders: dict[Platform, PushSender] = {}
    apns_fields = (settings.apns_key_file, settings.apns_key_id, settings.apns_team_id,
                   settings.apns_topic)
    if all(apns_fields):
        from groups.push.apns import ApnsSender  # imported only when used: aioapns, h2

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
        from groups.push.webpush import VapidKeys, WebPushSender  # pywebpush, aiohttp

        senders[Platform.web] = WebPushSender(
            VapidKeys.from_private(settings.vapid_private_key),
            settings.vapid_subject or settings.public_url,
        )
    if settings.fcm_service_account_file is not None:
        from groups.push.fcm import FcmSender  # imported only when used: pyfcm, google-auth

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
