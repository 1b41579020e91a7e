"""What is pushed, in one platform-neutral shape, and the rules for device tokens. Pure.

Four categories, each mutable per user: a group invite accepted, a place
enter/leave, an SOS, and a call started in a group. The builders below are
what the rest of the server calls; the senders translate a ``PushMessage`` to
APNs or FCM payloads.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from common.errors import BadRequest

TITLE_MAX_CHARS = 100
BODY_MAX_CHARS = 240
APNS_TOKEN_RE = re.compile(r"^[0-9a-f]{64,200}$")  # 32-byte tokens today; Apple may grow them
FCM_TOKEN_RE = re.compile(r"^[A-Za-z0-9_:\-]{32,512}$")
TOKEN_MAX_CHARS = 512  # the push_devices.token column
P256DH_BYTES = 65      # an uncompressed P-256 point
AUTH_SECRET_BYTES = 16


class Platform(StrEnum):
    ios = "ios"
    android = "android"
    web = "web"  # the token is the browser's push subscription, as compact JSON


class Category(StrEnum):
    invite_accepted = "invite_accepted"
    place = "place"
    sos = "sos"
    call = "call"


URGENT = frozenset({Category.sos, Category.call})  # high priority, break through focus modes


@dataclass(frozen=True)
class PushMessage:
    category: Category
    title: str
    body: str
    data: Mapping[str, str] = field(default_factory=dict)  # FCM wants string values
    collapse_id: str | None = None  # a newer push with the same id replaces the older one
    thread_id: str | None = None  # notifications grouped together on the device

    @property
    def urgent(self) -> bool:
        return self.category in URGENT

    def payload_data(self) -> dict[str, str]:
        return {"category": self.category.value, **self.data}


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message(category: Category, title: str, body: str, data: Mapping[str, str],
            collapse_id: str | None = None, group_id: int | None = None) -> PushMessage:
    return PushMessage(
        category=category,
        title=_clip(title, TITLE_MAX_CHARS),
        body=_clip(body, BODY_MAX_CHARS),
        data={k: str(v) for k, v in data.items()},
        collapse_id=collapse_id,
        thread_id=f"group-{group_id}" if group_id is not None else None,
    )


def invite_accepted(group_id: int, group_name: str, member_name: str) -> PushMessage:
    return message(Category.invite_accepted, group_name, f"{member_name} joined the group",
                   {"group_id": str(group_id)}, group_id=group_id)


def place_transition(group_id: int, group_name: str, member_name: str, place_name: str,
                     entered: bool) -> PushMessage:
    verb = "arrived at" if entered else "left"
    return message(Category.place, group_name, f"{member_name} {verb} {place_name}",
                   {"group_id": str(group_id), "place": place_name,
                    "event": "enter" if entered else "leave"}, group_id=group_id)


def sos(group_id: int, group_name: str, member_name: str, lat: float | None = None,
        lon: float | None = None) -> PushMessage:
    data = {"group_id": str(group_id)}
    if lat is not None and lon is not None:
        data.update(lat=f"{lat:.5f}", lon=f"{lon:.5f}")
    return message(Category.sos, f"SOS from {member_name}",
                   f"{member_name} needs help ({group_name})", data, group_id=group_id)


def call_started(group_id: int, group_name: str, started_by: str) -> PushMessage:
    return message(Category.call, group_name, f"A call started in {group_name} ({started_by})",
                   {"group_id": str(group_id)}, collapse_id=f"call-{group_id}",
                   group_id=group_id)


def clean_token(platform: str, token: str) -> tuple[Platform, str]:
    """Validate a device token's shape for its platform (APNs: hex; FCM: base64url-ish)."""
    try:
        kind = Platform(platform)
    except ValueError:
        raise BadRequest("platform must be 'ios', 'android' or 'web'") from None
    token = token.strip()
    if kind is Platform.web:
        return kind, clean_web_subscription(token)
    if kind is Platform.ios:
        token = token.lower()
        if not APNS_TOKEN_RE.fullmatch(token):
            raise BadRequest("an iOS device token is 64 or more hexadecimal characters")
    elif not FCM_TOKEN_RE.fullmatch(token):
        raise BadRequest("an Android (FCM) registration token is 32-512 characters of "
                         "letters, digits, '_', '-' and ':'")
    return kind, token


def _b64url_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"a Web Push subscription's keys.{name} must be a base64url string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise BadRequest(f"a Web Push subscription's keys.{name} is not base64url") from None


def clean_web_subscription(token: str) -> str:
    """A browser's PushSubscription JSON, checked and re-serialised compactly.

    ``{"endpoint": "https://...", "keys": {"p256dh": <65-byte point>, "auth": <16 bytes>}}``
    (``JSON.stringify(subscription)`` in the page); other fields are dropped.
    """
    try:
        sub = json.loads(token)
    except ValueError:
        raise BadRequest("a Web Push token is the subscription as JSON "
                         "(JSON.stringify(subscription))") from None
    if not isinstance(sub, dict) or not isinstance(sub.get("keys"), dict):
        raise BadRequest("a Web Push subscription needs an endpoint and keys {p256dh, auth}")
    endpoint = sub.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        raise BadRequest("a Web Push subscription's endpoint must be an https:// URL")
    keys = sub["keys"]
    p256dh = _b64url_bytes("p256dh", keys.get("p256dh"))
    if len(p256dh) != P256DH_BYTES or p256dh[0] != 4:
        raise BadRequest("a Web Push subscription's keys.p256dh must be an uncompressed "
                         "P-256 point (65 bytes)")
    if len(_b64url_bytes("auth", keys.get("auth"))) != AUTH_SECRET_BYTES:
        raise BadRequest("a Web Push subscription's keys.auth must be 16 bytes")
    compact = json.dumps({"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"],
                                                         "auth": keys["auth"]}},
                         separators=(",", ":"))
    if len(compact) > TOKEN_MAX_CHARS:
        raise BadRequest(f"this Web Push subscription is {len(compact)} characters; "
                         f"at most {TOKEN_MAX_CHARS} are stored")
    return compact


def clean_categories(names: Iterable[str]) -> frozenset[Category]:
    found = set()
    for name in names:
        try:
            found.add(Category(name))
        except ValueError:
            known = ", ".join(c.value for c in Category)
            raise BadRequest(f"unknown push category {name!r}; categories are: {known}"
                             ) from None
    return frozenset(found)
