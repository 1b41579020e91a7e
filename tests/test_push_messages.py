"""Pure push rules: token shapes, categories, message builders, backoff. No event loop."""

from __future__ import annotations

import random

import pytest

from common.errors import BadRequest
from groups.push import messages
from groups.push.apns import apns_payload, classify
from groups.push.dispatcher import backoff_s
from groups.push.fcm import android_config
from groups.push.messages import Category, Platform, clean_categories, clean_token
from groups.push.senders import SendResult
from tests.push_support import android_token, ios_token


@pytest.mark.parametrize(
    ("platform", "token", "expected"),
    [
        ("ios", ios_token(1), ios_token(1)),
        ("ios", " " + ios_token(10).upper() + "\n", ios_token(10)),
        ("ios", "ab" * 50, "ab" * 50),  # longer tokens are allowed: Apple may grow them
        ("android", android_token(1), android_token(1)),
    ],
)
def test_good_tokens(platform: str, token: str, expected: str) -> None:
    assert clean_token(platform, token) == (Platform(platform), expected)


@pytest.mark.parametrize(
    ("platform", "token", "message"),
    [
        ("ios", "ab" * 31, "64 or more hexadecimal"),  # too short
        ("ios", "zz" * 32, "64 or more hexadecimal"),  # not hex
        ("ios", "", "64 or more hexadecimal"),
        ("ios", android_token(1), "64 or more hexadecimal"),  # an FCM token sent as iOS
        ("android", "short", "32-512 characters"),
        ("android", "x" * 513, "32-512 characters"),
        ("android", "a b" * 20, "32-512 characters"),
        ("android", "<script>" * 8, "32-512 characters"),
        ("windows", ios_token(1), "platform must be"),
        ("", ios_token(1), "platform must be"),
    ],
)
def test_bad_tokens(platform: str, token: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        clean_token(platform, token)


def test_categories() -> None:
    assert clean_categories(["call", "sos", "call"]) == {Category.call, Category.sos}
    assert clean_categories([]) == frozenset()
    with pytest.raises(BadRequest, match="unknown push category 'music'"):
        clean_categories(["call", "music"])


@pytest.mark.parametrize(
    ("built", "category", "urgent", "body"),
    [
        (messages.invite_accepted(3, "Crew", "Dan"), Category.invite_accepted, False,
         "Dan joined the group"),
        (messages.place_transition(3, "Crew", "Dan", "Hut", entered=False), Category.place,
         False, "Dan left Hut"),
        (messages.sos(3, "Crew", "Dan"), Category.sos, True, "Dan needs help (Crew)"),
        (messages.call_started(3, "Crew", "Dan"), Category.call, True,
         "A call started in Crew (Dan)"),
    ],
)
def test_builders(built: messages.PushMessage, category: Category, urgent: bool,
                  body: str) -> None:
    assert (built.category, built.urgent, built.body) == (category, urgent, body)
    assert built.thread_id == "group-3"
    assert built.payload_data()["category"] == category.value
    assert all(isinstance(v, str) for v in built.payload_data().values())
    aps = apns_payload(built)["aps"]
    assert ("interruption-level" in aps) is urgent
    assert android_config(built)["priority"] == ("high" if urgent else "normal")


def test_long_text_is_clipped() -> None:
    built = messages.invite_accepted(1, "G" * 500, "N" * 500)
    assert len(built.title) == messages.TITLE_MAX_CHARS and built.title.endswith("…")
    assert len(built.body) <= messages.BODY_MAX_CHARS


@pytest.mark.parametrize(
    ("status", "reason", "result"),
    [
        ("200", None, SendResult.delivered),
        ("410", "Unregistered", SendResult.invalid_token),
        ("400", "BadDeviceToken", SendResult.invalid_token),
        ("400", "DeviceTokenNotForTopic", SendResult.invalid_token),
        ("400", "PayloadTooLarge", SendResult.failed),
        ("403", "InvalidProviderToken", SendResult.failed),
        ("429", "TooManyRequests", SendResult.retry),
        ("500", "InternalServerError", SendResult.retry),
        ("503", "ServiceUnavailable", SendResult.retry),
    ],
)
def test_apns_classification(status: str, reason: str | None, result: SendResult) -> None:
    from aioapns.common import NotificationResult

    assert classify(NotificationResult("id", status, description=reason)) is result


@pytest.mark.parametrize("attempt", range(10))
def test_backoff_is_bounded_full_jitter(attempt: int) -> None:
    rng = random.Random(attempt)
    delays = [backoff_s(attempt, 0.5, 30.0, rng) for _ in range(200)]
    cap = min(30.0, 0.5 * 2 ** attempt)
    assert all(0 <= d <= cap for d in delays)
    assert max(delays) > cap / 2  # spread over the window, not pinned to the start
