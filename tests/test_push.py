"""Push end to end: the dispatcher, real APNs/FCM client libraries, local stand-ins.

aioapns talks TLS + HTTP/2 to a local h2 server (trusting its self-signed
certificate); pyfcm gets a real OAuth token from a local token endpoint with
the service account's key and posts to a local FCM v1 endpoint. Only the
backoff sleep is replaced, by one that records the delays.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from common.db import SessionFactory, session_scope
from common.settings import Settings
from groups.push import messages, store
from groups.push.apns import ApnsSender
from groups.push.configure import make_senders
from groups.push.dispatcher import PushDispatcher
from groups.push.fcm import FcmSender
from groups.push.messages import Category, Platform
from groups.push.senders import LogSender, SendResult
from tests.db_support import migrated_with_users
from tests.push_support import (
    APNS_KEY_ID,
    APNS_TEAM_ID,
    APNS_TOPIC,
    FakeApns,
    FakeFcm,
    android_token,
    fake_apns,
    fake_fcm,
    ios_token,
    p8_key,
    self_signed_cert,
)


@dataclass
class Db:
    sessions: SessionFactory
    users: list[int]

    async def add_device(self, user_id: int, platform: str, token: str) -> None:
        async with session_scope(self.sessions) as session:
            await store.register_device(session, user_id, platform, token, time.time())

    async def tokens(self) -> set[str]:
        async with self.sessions() as session:
            return {d.token for d in await store.devices_for(session, self.users)}


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Db]:
    engine, sessions, users = await migrated_with_users(sqlite_url, "ann", "bob", "cid")
    yield Db(sessions, users)
    await engine.dispose()


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


@pytest.fixture
async def apns(tmp_path: Path) -> AsyncIterator[tuple[FakeApns, ApnsSender]]:
    cert, key = self_signed_cert(tmp_path)
    pem, public = p8_key()
    async with fake_apns(cert, key, public) as fake:
        sender = ApnsSender(key=pem, key_id=APNS_KEY_ID, team_id=APNS_TEAM_ID, topic=APNS_TOPIC,
                            server=("127.0.0.1", fake.port),
                            ssl_context=ssl.create_default_context(cafile=str(cert)))
        yield fake, sender
        await sender.close()


@pytest.fixture
def fcm(tmp_path: Path) -> tuple[FakeFcm, FcmSender]:
    with fake_fcm(tmp_path) as (fake, account):
        yield fake, FcmSender(service_account_file=str(account), endpoint_base=fake.url)


SOS = messages.sos(7, "Ridge crew", "Ann", 46.5, 7.9)


async def test_apns_payload_headers_and_provider_token(
    db: Db, apns: tuple[FakeApns, ApnsSender]
) -> None:
    fake, sender = apns
    ann, bob, _ = db.users
    await db.add_device(bob, "ios", ios_token(1).upper())  # stored lowercase
    dispatcher = PushDispatcher(db.sessions, {Platform.ios: sender})
    report = await dispatcher.deliver([ann, bob], SOS)
    assert report.results == {ios_token(1): SendResult.delivered}
    (request,) = fake.requests
    assert request.token == ios_token(1)
    assert request.headers[":method"] == "POST"
    assert request.headers["apns-topic"] == APNS_TOPIC
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"  # SOS is urgent
    assert int(request.headers["apns-expiration"]) > time.time()
    assert request.claims is not None and request.claims["iss"] == APNS_TEAM_ID
    assert request.payload == {
        "aps": {"alert": {"title": "SOS from Ann", "body": "Ann needs help (Ridge crew)"},
                "sound": "default", "category": "sos", "thread-id": "group-7",
                "interruption-level": "time-sensitive"},
        "category": "sos", "group_id": "7", "lat": "46.50000", "lon": "7.90000",
    }


async def test_apns_invalid_token_is_deleted_and_5xx_retried(
    db: Db, apns: tuple[FakeApns, ApnsSender]
) -> None:
    fake, sender = apns
    ann, bob, cid = db.users
    await db.add_device(ann, "ios", ios_token(1))
    await db.add_device(bob, "ios", ios_token(2))
    await db.add_device(cid, "ios", ios_token(3))
    fake.script[ios_token(1)] = [410]  # Unregistered
    fake.script[ios_token(2)] = [500, 503]  # then 200
    fake.script[ios_token(3)] = [500] * 10  # never recovers
    sleep = RecordingSleep()
    dispatcher = PushDispatcher(db.sessions, {Platform.ios: sender}, max_attempts=4,
                                base_backoff_s=1.0, sleep=sleep)
    report = await dispatcher.deliver(db.users, messages.invite_accepted(7, "Ridge", "Dan"))
    assert report.results == {ios_token(1): SendResult.invalid_token,
                              ios_token(2): SendResult.delivered,
                              ios_token(3): SendResult.retry}
    assert report.attempts == {ios_token(1): 1, ios_token(2): 3, ios_token(3): 4}
    assert len(fake.sent_to(ios_token(2))) == 3 and len(fake.sent_to(ios_token(3))) == 4
    assert await db.tokens() == {ios_token(2), ios_token(3)}
    # full-jitter backoff: each wait within base * 2**n
    assert len(sleep.delays) == 2 + 3
    assert all(0 <= d <= 1.0 * 2 ** 3 for d in sleep.delays)


async def test_apns_permanent_errors_are_not_retried_and_keep_the_token(
    db: Db, tmp_path: Path, apns: tuple[FakeApns, ApnsSender]
) -> None:
    fake, _ = apns
    ann = db.users[0]
    await db.add_device(ann, "ios", ios_token(1))
    other_pem, _ = p8_key()  # a key APNs does not know: 403 InvalidProviderToken
    cert = tmp_path / "standin.crt"
    wrong = ApnsSender(key=other_pem, key_id=APNS_KEY_ID, team_id=APNS_TEAM_ID, topic=APNS_TOPIC,
                       server=("127.0.0.1", fake.port),
                       ssl_context=ssl.create_default_context(cafile=str(cert)))
    dispatcher = PushDispatcher(db.sessions, {Platform.ios: wrong}, sleep=RecordingSleep())
    report = await dispatcher.deliver([ann], SOS)
    await wrong.close()
    assert report.results == {ios_token(1): SendResult.failed}
    assert len(fake.requests) == 1
    assert await db.tokens() == {ios_token(1)}


async def test_apns_unreachable_counts_as_retry(db: Db, tmp_path: Path) -> None:
    cert, _ = self_signed_cert(tmp_path)
    pem, _ = p8_key()
    sender = ApnsSender(key=pem, key_id=APNS_KEY_ID, team_id=APNS_TEAM_ID, topic=APNS_TOPIC,
                        server=("127.0.0.1", 1),
                        ssl_context=ssl.create_default_context(cafile=str(cert)))
    assert await sender.send(ios_token(1), SOS) is SendResult.retry
    await sender.close()


async def test_fcm_payload_and_oauth_token(db: Db, fcm: tuple[FakeFcm, FcmSender]) -> None:
    fake, sender = fcm
    bob = db.users[1]
    await db.add_device(bob, "android", android_token(1))
    dispatcher = PushDispatcher(db.sessions, {Platform.android: sender})
    report = await dispatcher.deliver([bob], messages.call_started(7, "Ridge crew", "Ann"))
    assert report.results == {android_token(1): SendResult.delivered}
    assert fake.token_requests >= 1
    assert all(h.removeprefix("Bearer ") in fake.access_tokens for h in fake.auth_headers)
    (message,) = fake.sent_to(android_token(1))
    assert message == {
        "token": android_token(1),
        "notification": {"title": "Ridge crew", "body": "A call started in Ridge crew (Ann)"},
        "data": {"category": "call", "group_id": "7"},
        "android": {"priority": "high", "ttl": "3600s", "collapse_key": "call-7",
                    "notification": {"channel_id": "call", "tag": "group-7"}},
    }


async def test_fcm_unregistered_deleted_5xx_retried(db: Db, fcm: tuple[FakeFcm, FcmSender]
                                                    ) -> None:
    fake, sender = fcm
    ann, bob, cid = db.users
    await db.add_device(ann, "android", android_token(1))
    await db.add_device(bob, "android", android_token(2))
    await db.add_device(cid, "android", android_token(3))
    fake.script[android_token(1)] = [404]  # UNREGISTERED
    fake.script[android_token(2)] = [503, 500]
    fake.script[android_token(3)] = [400]  # bad payload: our fault, not the token's
    sleep = RecordingSleep()
    dispatcher = PushDispatcher(db.sessions, {Platform.android: sender}, sleep=sleep,
                                base_backoff_s=0.5)
    report = await dispatcher.deliver(db.users, messages.place_transition(
        7, "Ridge", "Ann", "Hut", entered=True))
    assert report.results == {android_token(1): SendResult.invalid_token,
                              android_token(2): SendResult.delivered,
                              android_token(3): SendResult.failed}
    assert len(fake.sent_to(android_token(2))) == 3
    assert len(fake.sent_to(android_token(3))) == 1
    assert await db.tokens() == {android_token(2), android_token(3)}
    assert len(sleep.delays) == 2


async def test_muted_categories_send_nothing(
    db: Db, apns: tuple[FakeApns, ApnsSender], fcm: tuple[FakeFcm, FcmSender]
) -> None:
    fake_a, ios = apns
    fake_f, android = fcm
    ann, bob, _ = db.users
    await db.add_device(ann, "ios", ios_token(1))
    await db.add_device(ann, "android", android_token(1))
    await db.add_device(bob, "android", android_token(2))
    async with session_scope(db.sessions) as session:
        await store.set_muted(session, ann, ["call", "place"], time.time())
    dispatcher = PushDispatcher(db.sessions, {Platform.ios: ios, Platform.android: android})
    dispatcher.notify([ann, bob], messages.call_started(7, "Ridge", "Cid"))
    await dispatcher.drain()
    assert fake_a.requests == []
    assert [m["message"]["token"] for m in fake_f.messages] == [android_token(2)]
    # a category ann did not mute still reaches both of her devices
    report = await dispatcher.deliver([ann], SOS)
    assert set(report.results) == {ios_token(1), android_token(1)}
    assert report.muted_users == set()
    await dispatcher.close()


async def test_notify_returns_at_once_and_close_waits(db: Db) -> None:
    ann = db.users[0]
    await db.add_device(ann, "ios", ios_token(1))
    log = LogSender()
    dispatcher = PushDispatcher(db.sessions, {Platform.ios: log})
    dispatcher.notify([ann], SOS)
    assert log.sent == []  # nothing happened synchronously
    await dispatcher.close()
    assert [(t, m.category) for t, m in log.sent] == [(ios_token(1), Category.sos)]


async def test_devices_without_a_sender_are_skipped(db: Db) -> None:
    ann = db.users[0]
    await db.add_device(ann, "android", android_token(1))
    report = await PushDispatcher(db.sessions, {}).deliver([ann], SOS)
    assert report.results == {} and report.skipped_tokens == [android_token(1)]


def test_make_senders(tmp_path: Path) -> None:
    dev = make_senders(Settings(_env_file=None, dev=True))  # type: ignore[call-arg]
    assert {p: s.name for p, s in dev.items()} == {
        Platform.ios: "log", Platform.android: "log", Platform.web: "log"}
    assert make_senders(Settings(_env_file=None, dev=False,  # type: ignore[call-arg]
                                 jwt_secret="x" * 32)) == {}
    pem, _ = p8_key()
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_text(pem)
    with fake_fcm(tmp_path) as (_, account):
        configured = make_senders(Settings(  # type: ignore[call-arg]
            _env_file=None, dev=False, jwt_secret="x" * 32, apns_key_file=key_file,
            apns_key_id=APNS_KEY_ID, apns_team_id=APNS_TEAM_ID, apns_topic=APNS_TOPIC,
            fcm_service_account_file=account))
    assert {p: s.name for p, s in configured.items()} == {Platform.ios: "apns",
                                                          Platform.android: "fcm"}
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "service_account"}')
    with pytest.raises(ValueError, match="FCM service account file"):
        make_senders(Settings(_env_file=None, fcm_service_account_file=broken))  # type: ignore[call-arg]


def test_provider_token_is_es256_with_key_id() -> None:
    """What aioapns signs is what Apple expects: ES256, kid header, iss = team id."""
    from aioapns.connection import JWTAuthorizationHeaderProvider

    pem, public = p8_key()
    header = JWTAuthorizationHeaderProvider(pem, APNS_KEY_ID, APNS_TEAM_ID).get_header()
    token = header.removeprefix("bearer ")
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": APNS_KEY_ID,
                                                "typ": "JWT"}
    assert jwt.decode(token, public, algorithms=["ES256"])["iss"] == APNS_TEAM_ID
