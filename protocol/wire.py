"""The WebSocket wire protocol: client -> server messages, validated with pydantic.

Every frame is one JSON object with a ``type``. A request may carry an ``id``
(string or number, echoed in the reply or error). Server -> client messages
are plain dicts built by ``server_message``; docs/protocol.md lists them all.
This module is the schema the desktop client imports too, so it depends on
nothing but pydantic.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from protocol import limits
from protocol.limits import GAIN_MAX, RADIUS_MAX_M, RADIUS_MIN_M

PROTOCOL_VERSION = 1
ROOM_ID_MAX_CHARS = 64
SDP_MAX_CHARS = 32_000

REQUEST_ID_MAX_CHARS = 64
REQUEST_ID_MAX_INT = 2**53 - 1  # the largest integer JavaScript clients hold exactly

RequestId = (Annotated[str, Field(max_length=REQUEST_ID_MAX_CHARS)]
             | Annotated[int, Field(strict=True, ge=-REQUEST_ID_MAX_INT, le=REQUEST_ID_MAX_INT)])


class WireError(Exception):
    """A message that cannot be understood; ``code`` goes on the wire."""

    def __init__(self, code: str, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: RequestId | None = None


class Join(_Msg):
    type: Literal["join"]
    room: str = Field(max_length=ROOM_ID_MAX_CHARS)
    radius_m: float | None = Field(None, ge=RADIUS_MIN_M, le=RADIUS_MAX_M)


class Leave(_Msg):
    type: Literal["leave"]
    room: str = Field(max_length=ROOM_ID_MAX_CHARS)


class Ping(_Msg):
    type: Literal["ping"]


class Offer(_Msg):
    type: Literal["offer"]
    room: str = Field(max_length=ROOM_ID_MAX_CHARS)
    sdp: str = Field(min_length=1, max_length=SDP_MAX_CHARS)
    music_mids: list[Annotated[str, Field(max_length=16)]] = Field(
        default_factory=list, max_length=4
    )


class IceCandidate(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    candidate: str = Field(max_length=1024)
    sdpMid: str | None = Field(None, max_length=16)  # WebRTC's own name
    sdpMLineIndex: int | None = Field(None, ge=0, le=16)


class Candidate(_Msg):
    type: Literal["candidate"]
    room: str = Field(max_length=ROOM_ID_MAX_CHARS)
    candidate: IceCandidate | None = None  # None: end of candidates


class Mute(_Msg):
    type: Literal["mute"]
    muted: bool
    room: str | None = Field(None, max_length=ROOM_ID_MAX_CHARS)


class Volume(_Msg):
    type: Literal["volume"]
    participant_id: str = Field(max_length=64)
    gain: float = Field(ge=0.0, le=GAIN_MAX)


class Music(_Msg):
    type: Literal["music"]
    action: Literal["play", "queue", "pause", "resume", "skip", "stop"]
    source: str | None = Field(None, max_length=255)
    room: str | None = Field(None, max_length=ROOM_ID_MAX_CHARS)


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class Location(_Msg):
    """A fix, within ``protocol.limits``: the same bounds the server's validator
    (``groups.location.fixes.parse_fix``, which also checks ``ts`` against the
    server's clock) applies to WebSocket and REST fixes alike."""

    type: Literal["location"]
    lat: float = Field(ge=limits.LAT_MIN_DEG, le=limits.LAT_MAX_DEG)
    lon: float = Field(ge=limits.LON_MIN_DEG, le=limits.LON_MAX_DEG)
    accuracy_m: float = Field(gt=0.0, le=limits.ACCURACY_MAX_M)
    ts: float | None = None
    speed_mps: float | None = Field(None, ge=0.0, le=limits.SPEED_MAX_MPS)
    heading_deg: float | None = Field(None, ge=limits.HEADING_MIN_DEG, lt=limits.HEADING_MAX_DEG)
    battery_pct: float | None = Field(None, ge=limits.BATTERY_MIN_PCT, le=limits.BATTERY_MAX_PCT)

    _check_finite = field_validator(
        "lat", "lon", "accuracy_m", "ts", "speed_mps", "heading_deg", "battery_pct"
    )(_finite)


class Radius(_Msg):
    type: Literal["radius"]
    radius_m: float = Field(ge=RADIUS_MIN_M, le=RADIUS_MAX_M)


class Chat(_Msg):
    type: Literal["chat"]
    room: str = Field(max_length=ROOM_ID_MAX_CHARS)
    text: str = Field(min_length=1, max_length=500)


class Sos(_Msg):
    type: Literal["sos"]
    message: str | None = Field(None, max_length=200)


class DisplayName(_Msg):
    type: Literal["display_name"]
    display_name: str = Field(min_length=1, max_length=64)


ClientMessage = Annotated[
    Join | Leave | Ping | Offer | Candidate | Mute | Volume | Music | Location | Radius | Chat
    | Sos | DisplayName,
    Field(discriminator="type"),
]
CLIENT_TYPES = frozenset(
    m.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for m in (Join, Leave, Ping, Offer, Candidate, Mute, Volume, Music, Location, Radius, Chat,
              Sos, DisplayName)
)
_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def parse_client_message(text: str | bytes, max_bytes: int) -> ClientMessage:
    """Parse one frame, or raise ``WireError`` with a code for the client."""
    if isinstance(text, bytes):
        raise WireError("bad_frame", "send text frames holding JSON, not binary frames")
    if len(text.encode()) > max_bytes:
        raise WireError("message_too_large", f"messages are limited to {max_bytes} bytes")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WireError("bad_json", f"not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise WireError("bad_json", "not valid JSON: nested too deeply") from None
    except ValueError:  # an integer of more than sys.get_int_max_str_digits() digits
        raise WireError("bad_json", "not valid JSON: a number is too long") from None
    if not isinstance(raw, dict):
        raise WireError("bad_json", "a message must be a JSON object")
    request_id = _request_id(raw.get("id"))
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        shown = repr(kind[:40]) if isinstance(kind, str) else f"a JSON {_json_kind(kind)}"
        raise WireError("unknown_type", f"unknown message type: {shown}", request_id)
    try:
        return _adapter.validate_python(raw)
    except RecursionError:
        raise WireError("bad_request", "message: nested too deeply", request_id) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])[:80] or "message"
        raise WireError("bad_request", f"{where}: {first['msg']}", request_id) from None


def _request_id(value: object) -> RequestId | None:
    """The ``id`` to echo in an error, if it is one a reply could carry (else none)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and len(value) <= REQUEST_ID_MAX_CHARS:
        return value
    if isinstance(value, int) and abs(value) <= REQUEST_ID_MAX_INT:
        return value
    return None


def _json_kind(value: object) -> str:
    names = {dict: "object", list: "array", float: "number", int: "number", bool: "boolean",
             type(None): "null"}
    return names.get(type(value), "value")


def server_message(kind: str, request_id: RequestId | None = None, **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": kind, **fields}
    if request_id is not None:
        message["id"] = request_id
    return message


def encode(message: dict[str, Any]) -> str:
    """One server message as the text of its WebSocket frame."""
    if isinstance(message, Shared):
        return message.text
    return _text(message)


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class Shared(dict[str, Any]):
    """A message going to many connections (a room's event): its text is built once,
    not once per listener (200 ``json.dumps`` a speaking event in a big room)."""

    @functools.cached_property
    def text(self) -> str:
        return _text(self)
