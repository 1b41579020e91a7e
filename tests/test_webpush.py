"""Web Push: subscriptions as device tokens, VAPID-signed and RFC 8291-encrypted pushes.

A push service runs on loopback (aiohttp): it records each POST, answers with
the status its endpoint names, and the test checks the VAPID JWT's ES256
signature with the key in the Authorization header, then decrypts the body
(aes128gcm, ``http_ece``) with the subscription's private keys, as a browser
would. A 410 from the service drops the subscription, as for APNs and FCM.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import http_ece
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.errors import BadRequest
from common.settings import Settings
from groups.push import messages
from groups.push.dispatcher import PushDispatcher
from groups.push.messages import Platform, clean_token, clean_web_subscription
from groups.push.senders import SendResult
from groups.push.webpush import VapidKeys, WebPushSender, b64url, classify
from signaling.app import create_app
from tests.server_helpers import auth, live_server
from tests.test_push import Db, db  # noqa: F401  (the fixture: users in a migrated SQLite)

SUBJECT = "mailto:ops@disco.example"
SOS = messages.sos(7, "Ridge crew", "Bob", 46.5634, 7.835)


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """A subscription's private side: what the browser keeps to decrypt pushes."""

    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self, endpoint: str) -> dict[str, Any]:
        point = self.private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint)
        return {"endpoint": endpoint, "expirationTime": None,
                "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)}}

    def decrypt(self, body: bytes) -> Any:
        return json.loads(http_ece.decrypt(body, private_key=self.private_key,
                                           auth_secret=self.auth, version="aes128gcm"))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class PushService:
    """POST /push/<status>/<id>: recorded, answered with <status>."""

    url: str
    received: list[Received]


@pytest.fixture
async def push_service() -> AsyncIterator[PushService]:
    received: list[Received] = []

    async def push(request: web.Request) -> web.Response:
        received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()},
                                await request.read()))
        return web.Response(status=int(request.match_info["status"]))

    app = web.Application()
    app.router.add_post("/push/{status}/{id}", push)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield PushService(f"http://127.0.0.1:{port}", received)
    finally:
        await runner.cleanup()


def verify_vapid(authorization: str, audience: str, keys: VapidKeys) -> dict[str, Any]:
    """RFC 8292: ``vapid t=<ES256 JWT>, k=<public key>``; the signature must verify."""
    scheme, _, params = authorization.partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert fields["k"] == keys.public_key
    header_b64, claims_b64, signature_b64 = fields["t"].split(".")
    assert json.loads(unb64url(header_b64)) == {"typ": "JWT", "alg": "ES256"}
    signature = unb64url(signature_b64)
    assert len(signature) == 64  # JWS: raw r || s
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
    public.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    claims: dict[str, Any] = json.loads(unb64url(claims_b64))
    assert claims["aud"] == audience and claims["sub"] == SUBJECT
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    return claims


async def test_a_push_is_signed_and_only_the_subscriber_can_read_it(
    push_service: PushService,
) -> None:
    keys = VapidKeys.generate()
    sender = WebPushSender(keys, SUBJECT)
    phone = Browser()
    token = clean_web_subscription(json.dumps(phone.subscription(f"{push_service.url}/push/201/a")))
    try:
        assert await sender.send(token, SOS) is SendResult.delivered
    finally:
        await sender.close()
    (got,) = push_service.received
    verify_vapid(got.headers["authorization"], push_service.url, keys)
    assert got.headers["content-encoding"] == "aes128gcm"
    assert got.headers["urgency"] == "high"  # an SOS
    assert int(got.headers["ttl"]) > 0
    assert b"SOS" not in got.body  # encrypted on the wire
    assert phone.decrypt(got.body) == {
        "title": "SOS from Bob", "body": "Bob needs help (Ridge crew)", "tag": None,
        "data": {"category": "sos", "group_id": "7", "lat": "46.56340", "lon": "7.83500"},
    }
    with pytest.raises(Exception):  # noqa: B017  (any failure: another browser's keys)
        Browser().decrypt(got.body)


async def test_statuses_map_to_what_the_dispatcher_does(push_service: PushService) -> None:
    sender = WebPushSender(VapidKeys.generate(), SUBJECT)
    phone = Browser()
    try:
        for status, expected in ((202, SendResult.delivered), (410, SendResult.invalid_token),
                                 (404, SendResult.invalid_token), (429, SendResult.retry),
                                 (503, SendResult.retry), (403, SendResult.failed)):
            token = json.dumps(phone.subscription(f"{push_service.url}/push/{status}/x"))
            assert await sender.send(token, SOS) is expected, status
        # Nobody listening: retry later.
        dead = json.dumps(phone.subscription("http://127.0.0.1:9/push/201/x"))
        assert await sender.send(dead, SOS) is SendResult.retry
    finally:
        await sender.close()


async def test_a_gone_subscription_is_dropped(
    db: Db, push_service: PushService,  # noqa: F811
) -> None:
    ann = db.users[0]
    kept = json.dumps(Browser().subscription(f"{push_service.url}/push/201/kept"))
    gone = json.dumps(Browser().subscription(f"{push_service.url}/push/410/gone"))
    await db.add_device(ann, "web", kept)
    await db.add_device(ann, "web", gone)
    sender = WebPushSender(VapidKeys.generate(), SUBJECT)
    try:
        report = await PushDispatcher(db.sessions, {Platform.web: sender}).deliver([ann], SOS)
    finally:
        await sender.close()
    compact_gone = clean_web_subscription(gone)
    assert report.deleted_tokens == [compact_gone]
    assert await db.tokens() == {clean_web_subscription(kept)}
    assert len(push_service.received) == 2


@pytest.mark.parametrize(("token", "message"), [
    ("not json", "subscription as JSON"),
    ("[]", "needs an endpoint and keys"),
    ('{"endpoint": "ftp://x", "keys": {}}', "https:// URL"),
    ('{"endpoint": "https://p.example/1", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}',
     "uncompressed P-256 point"),
    ('{"endpoint": "https://p.example/1", "keys": {"p256dh": 5, "auth": "x"}}',
     "base64url string"),
])
def test_bad_subscriptions_are_refused_plainly(token: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        clean_token("web", token)


def test_subscriptions_are_stored_compactly_and_size_checked() -> None:
    sub = Browser().subscription("https://push.example/v1/abc")
    kind, token = clean_token("web", json.dumps(sub, indent=2))
    assert kind is Platform.web
    assert json.loads(token) == {"endpoint": sub["endpoint"], "keys": sub["keys"]}
    assert " " not in token
    wrong_auth = {**sub, "keys": {**sub["keys"], "auth": b64url(b"x" * 8)}}
    with pytest.raises(BadRequest, match="16 bytes"):
        clean_web_subscription(json.dumps(wrong_auth))
    long = {**sub, "endpoint": "https://push.example/" + "a" * 500}
    with pytest.raises(BadRequest, match="at most 512"):
        clean_web_subscription(json.dumps(long))


def test_vapid_keys_and_statuses() -> None:
    keys = VapidKeys.generate()
    assert VapidKeys.from_private(keys.private_key) == keys
    assert len(unb64url(keys.public_key)) == 65
    with pytest.raises(BadRequest, match="not a VAPID private key"):
        VapidKeys.from_private("not a key")
    with pytest.raises(BadRequest, match="mailto"):
        WebPushSender(keys, "ops@disco.example")
    assert [classify(s) for s in (201, 410, 500, 400)] == [
        SendResult.delivered, SendResult.invalid_token, SendResult.retry, SendResult.failed]


async def test_routes_key_and_web_devices(settings: Settings) -> None:
    async with live_server(settings) as server:  # no key configured: Web Push is off
        token, _ = await server.register("ann")
        off = await server.http.get("/api/push/webpush", headers=auth(token))
        assert off.status_code == 503 and "DISCO_VAPID_PRIVATE_KEY" in off.json()["message"]
    keys = VapidKeys.generate()
    async with live_server(settings.model_copy(update={"vapid_private_key": keys.private_key})
                           ) as server:
        token, _ = await server.register("bea")  # same database
        on = await server.http.get("/api/push/webpush", headers=auth(token))
        assert on.json() == {"public_key": keys.public_key}
        bad = await server.http.post("/api/devices", headers=auth(token),
                                     json={"platform": "web", "token": "{}"})
        assert bad.status_code == 400 and "endpoint" in bad.json()["message"]
        sub = Browser().subscription("https://push.example/v1/abc")
        ok = await server.http.post("/api/devices", headers=auth(token),
                                    json={"platform": "web", "token": json.dumps(sub)})
        assert ok.status_code == 201 and ok.json()["platform"] == "web"
        listed = (await server.http.get("/api/devices", headers=auth(token))).json()["devices"]
        assert [json.loads(d["token"])["endpoint"] for d in listed] == [sub["endpoint"]]


def test_a_bad_vapid_setting_stops_the_server(settings: Settings) -> None:
    with pytest.raises(SystemExit, match=r"DISCO_VAPID_.*not a VAPID private key"):
        create_app(settings.model_copy(update={"vapid_private_key": "nope"}))
    with pytest.raises(SystemExit, match="mailto"):
        create_app(settings.model_copy(update={
            "vapid_private_key": VapidKeys.generate().private_key, "vapid_subject": "ops"}))
