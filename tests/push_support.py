"""Local stand-ins for APNs (HTTP/2 over TLS) and FCM HTTP v1 (+ its OAuth token endpoint).

Both check credentials the way the real services do: the APNs stand-in
verifies the ES256 provider token against the .p8 key's public half; the OAuth
stand-in verifies the service account's RS256 assertion and hands out an
access token that the FCM stand-in then requires. Responses are scripted per
device token (a list of statuses, consumed one per request).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import secrets
import ssl
import urllib.parse
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded

from tests.fake_http import json_server

APNS_KEY_ID = "ABC123DEFG"
APNS_TEAM_ID = "TEAM123456"
APNS_TOPIC = "com.example.disco"
FCM_PROJECT = "disco-test"
# google-auth always signs for Google's endpoint, whatever token_uri says; so does Google check
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"

APNS_REASONS = {400: "BadDeviceToken", 403: "InvalidProviderToken", 410: "Unregistered",
                429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}


def ios_token(n: int) -> str:
    return f"{n:02x}" * 32


def android_token(n: int) -> str:
    return f"fcm{n}:APA91b" + "x" * 140


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(
            "127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "standin.crt", directory / "standin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def p8_key() -> tuple[str, Any]:
    """An APNs-style .p8 key (PKCS#8 P-256 PEM) and its public key."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, key.public_key()


@dataclass
class ApnsRequest:
    headers: dict[str, str]
    payload: dict[str, Any]
    claims: dict[str, Any] | None

    @property
    def token(self) -> str:
        return self.headers[":path"].rsplit("/", 1)[-1]


@dataclass
class FakeApns:
    public_key: Any
    port: int = 0
    requests: list[ApnsRequest] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, str | None]:
        claims = None
        auth = headers.get("authorization", "")
        try:
            token = auth.removeprefix("bearer ")
            if jwt.get_unverified_header(token).get("kid") != APNS_KEY_ID:
                raise jwt.InvalidTokenError("wrong kid")
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"])
        except jwt.InvalidTokenError:
            claims = None
        request = ApnsRequest(headers, json.loads(body), claims)
        self.requests.append(request)
        if claims is None or claims.get("iss") != APNS_TEAM_ID:
            return 403, "InvalidProviderToken"
        if headers.get("apns-topic") != APNS_TOPIC:
            return 400, "DeviceTokenNotForTopic"
        queue = self.script.get(request.token)
        status = queue.pop(0) if queue else 200
        return status, APNS_REASONS.get(status) if status != 200 else None

    def sent_to(self, token: str) -> list[ApnsRequest]:
        return [r for r in self.requests if r.token == token]


class _H2Server(asyncio.Protocol):
    def __init__(self, fake: FakeApns) -> None:
        self.fake = fake
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for event in self.conn.receive_data(data):
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = (dict(event.headers), bytearray())  # type: ignore[arg-type]
            elif isinstance(event, DataReceived):
                self.streams[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
            elif isinstance(event, StreamEnded):
                self.respond(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
        self.transport.write(self.conn.data_to_send())

    def respond(self, stream_id: int) -> None:
        headers, body = self.streams.pop(stream_id)
        status, reason = self.fake.answer(headers, bytes(body))
        out = [(":status", str(status)), ("apns-id", headers.get("apns-id", ""))]
        if reason is None:
            self.conn.send_headers(stream_id, out, end_stream=True)
            return
        data = json.dumps({"reason": reason, "timestamp": 1_700_000_000_000}).encode()
        self.conn.send_headers(stream_id, [*out, ("content-type", "application/json"),
                                           ("content-length", str(len(data)))])
        self.conn.send_data(stream_id, data, end_stream=True)


@asynccontextmanager
async def fake_apns(cert: Path, key: Path, public_key: Any) -> AsyncIterator[FakeApns]:
    fake = FakeApns(public_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    server = await asyncio.get_running_loop().create_server(
        lambda: _H2Server(fake), "127.0.0.1", 0, ssl=context
    )
    fake.port = server.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class FakeFcm:
    """FCM HTTP v1 and Google's OAuth token endpoint on one local HTTP server."""

    public_key: Any
    url: str = ""
    access_tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def issue_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.token_requests += 1
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type"}
        try:
            claims = jwt.decode(form.get("assertion", ""), self.public_key, algorithms=["RS256"],
                                audience=GOOGLE_TOKEN_AUDIENCE)
        except jwt.InvalidTokenError as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        if "firebase.messaging" not in claims.get("scope", ""):
            return 400, {"error": "invalid_scope"}
        token = "ya29.test-" + secrets.token_hex(8)
        self.access_tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def send(self, path: str, auth: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path != f"/v1/projects/{FCM_PROJECT}/messages:send":
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "bad path"}}
        self.auth_headers.append(auth)
        if auth.removeprefix("Bearer ") not in self.access_tokens:
            return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
        message = json.loads(body)
        self.messages.append(message)
        token = message["message"].get("token", "")
        queue = self.script.get(token)
        status = queue.pop(0) if queue else 200
        if status == 200:
            return 200, {"name": f"projects/{FCM_PROJECT}/messages/{len(self.messages)}"}
        error_code = {404: "UNREGISTERED", 400: "INVALID_ARGUMENT"}.get(status, "INTERNAL")
        return status, {"error": {
            "code": status, "message": "Requested entity was not found." if status == 404
            else "error", "status": "NOT_FOUND" if status == 404 else error_code,
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                         "errorCode": error_code}],
        }}

    def sent_to(self, token: str) -> list[dict[str, Any]]:
        return [m["message"] for m in self.messages if m["message"].get("token") == token]


@contextmanager
def fake_fcm(directory: Path) -> Iterator[tuple[FakeFcm, Path]]:
    """The stand-in, and a service-account file whose token_uri points at it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake = FakeFcm(key.public_key())

    def respond(_method: str, path: str, headers: Mapping[str, str], raw: bytes
                ) -> tuple[int, Any]:
        if path == "/token":
            return fake.issue_token(dict(urllib.parse.parse_qsl(raw.decode())))
        return fake.send(path, headers.get("authorization", ""), raw)

    with json_server(respond) as url:
        fake.url = url
        yield fake, _service_account(directory, key, url)


def _service_account(directory: Path, key: rsa.RSAPrivateKey, url: str) -> Path:
    """A service-account file whose token_uri points at the stand-in."""
    account = directory / "service-account.json"
    account.write_text(json.dumps({
        "type": "service_account",
        "project_id": FCM_PROJECT,
        "private_key_id": "key1",
        "private_key": key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
        "client_email": f"push@{FCM_PROJECT}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": f"{url}/token",
    }))
    return account
