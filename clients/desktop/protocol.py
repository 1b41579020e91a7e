"""The wire protocol, seen from the client: build messages, read replies (sans-I/O).

Nothing here awaits or opens a socket. Outgoing messages are built through the
server's own pydantic schema (``protocol.wire``, the one server module the
client imports) so a message the server would reject fails here, in the
client, with a clear message. Incoming messages update a ``RoomState`` that
the UI renders; ``RoomState.apply`` returns human-readable notices.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from clients.desktop.errors import AuthFailed, RoomNotFound, UsageError
from protocol import wire

log = logging.getLogger(__name__)

NEARBY_ROOM = "nearby"
WS_CLOSE_UNAUTHORIZED = 4401
"""The server closes the socket with this code for a bad or expired token."""
WS_PATH = "/ws"
ROOM_ERRORS = frozenset({"not_found", "forbidden"})
"""Error codes that answer a join when the room is not ours to enter."""

Message = dict[str, Any]


# --- addresses -------------------------------------------------------------


def http_base(server: str) -> str:
    """``--server`` as an http(s) base URL without a trailing slash.

    Accepts ``host:port``, ``http://..``, ``https://..``, ``ws://..``, ``wss://..``.
    """
    text = server.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parsed = urllib.parse.urlsplit(text)
    scheme = {"ws": "http", "wss": "https"}.get(parsed.scheme, parsed.scheme)
    if scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--server must be an http(s) URL such as http://127.0.0.1:8080, "
                         f"not {server!r}")
    path = parsed.path.removesuffix(WS_PATH)
    return urllib.parse.urlunsplit((scheme, parsed.netloc, path, "", ""))


def ws_url(server: str, token: str) -> str:
    base = urllib.parse.urlsplit(http_base(server))
    scheme = "wss" if base.scheme == "https" else "ws"
    query = urllib.parse.urlencode({"token": token})
    return urllib.parse.urlunsplit((scheme, base.netloc, base.path + WS_PATH, query, ""))


def is_loopback_server(server: str) -> bool:
    """True when the server is on this machine's loopback (127.0.0.0/8, ::1, localhost)."""
    host = urllib.parse.urlsplit(http_base(server)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- client -> server --------------------------------------------------------


def _build(model: type[BaseModel], **fields: Any) -> Message:
    """Validate through the server's schema; a bad value is the user's usage error."""
    try:
        message = model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise UsageError(f"invalid {fields.get('type')} message: {where}: {first['msg']}") from None
    return message.model_dump(exclude_none=True)


def join(room: str, radius_m: float | None = None) -> Message:
    return _build(wire.Join, type="join", room=room, radius_m=radius_m)


def leave(room: str) -> Message:
    return _build(wire.Leave, type="leave", room=room)


def offer(room: str, sdp: str, music_mids: list[str]) -> Message:
    return _build(wire.Offer, type="offer", room=room, sdp=sdp, music_mids=music_mids)


def mute(room: str, muted: bool) -> Message:
    return _build(wire.Mute, type="mute", room=room, muted=muted)


def volume(participant_id: str, gain: float) -> Message:
    return _build(wire.Volume, type="volume", participant_id=participant_id, gain=gain)


def location(
    lat: float, lon: float, accuracy_m: float, ts: float, speed_mps: float | None = None
) -> Message:
    return _build(wire.Location, type="location", lat=lat, lon=lon, accuracy_m=accuracy_m, ts=ts,
                  speed_mps=speed_mps)


def ping() -> Message:
    return _build(wire.Ping, type="ping")


def check_radius(radius_m: float) -> None:
    if not wire.RADIUS_MIN_M <= radius_m <= wire.RADIUS_MAX_M:
        raise UsageError(
            f"--radius must be within {wire.RADIUS_MIN_M}..{wire.RADIUS_MAX_M} m, not {radius_m:g}"
        )


def check_gain(gain: float) -> None:
    if not 0.0 <= gain <= wire.GAIN_MAX:
        raise ValueError(f"gain must be within 0..{wire.GAIN_MAX:g}")


# --- REST answers --------------------------------------------------------------


def token_from_login(status: int, body: Any) -> str:
    """The access token from a login/guest reply, or ``AuthFailed`` with the server's words."""
    if status in (200, 201) and isinstance(body, dict) and isinstance(
        body.get("access_token"), str
    ):
        return str(body["access_token"])
    detail = body.get("message") if isinstance(body, dict) else None
    if status in (400, 401, 403, 422):
        raise AuthFailed(f"login refused by the server ({status}): {detail or 'no reason given'}")
    raise AuthFailed(f"unexpected login reply ({status}): {detail or body!r}")


def resolve_group(groups_reply: Any, wanted: str) -> str:
    """The room (``group:<id>``) for ``--group``: an id, ``group:<id>`` or a name.

    Names match case-insensitively; a name shared by two groups is refused
    rather than guessed.
    """
    groups = groups_reply.get("groups") if isinstance(groups_reply, dict) else None
    if not isinstance(groups, list):
        raise RoomNotFound(f"unexpected reply to GET /api/groups: {groups_reply!r}"[:200])
    text = wanted.strip()
    key = text.removeprefix("group:")
    if key.isdigit():
        for g in groups:
            if str(g.get("id")) == key:
                return f"group:{g['id']}"
    named = [g for g in groups if str(g.get("name", "")).casefold() == text.casefold()]
    if len(named) == 1:
        return f"group:{named[0]['id']}"
    if len(named) > 1:
        ids = ", ".join(str(g["id"]) for g in named)
        raise RoomNotFound(f"{len(named)} of your groups are named {text!r} (ids {ids}); "
                           "pass --group ID")
    mine = ", ".join(f"{g.get('name')} ({g.get('id')})" for g in groups) or "none"
    raise RoomNotFound(f"no group {text!r} among your groups (yours: {mine})")


def join_error(room: str, error: Message) -> Exception:
    """The exception for an ``error`` reply to ``join``."""
    code = error.get("code")
    text = error.get("message", "")
    if code in ROOM_ERRORS:
        return RoomNotFound(f"cannot join {room}: {text}")
    if code == "unauthorized":
        return AuthFailed(f"cannot join {room}: {text}")
    return RoomNotFound(f"cannot join {room}: {code}: {text}")


# --- server -> client: the room as the user sees it ------------------------------


@dataclass
class Participant:
    participant_id: str
    display_name: str
    user_id: int | None = None
    muted: bool = False
    speaking: bool = False
    gain: float = 1.0
    distance: str = ""
    """Nearby room only: the server's rounded distance to this stranger."""


@dataclass
class RoomState:
    """Who is in the room and who is speaking, kept from server events."""

    room: str = ""
    me: str | None = None
    my_name: str = ""
    music_allowed: bool = False
    participants: dict[str, Participant] = field(default_factory=dict)
    speaking_me: bool = False

    def joined(self, reply: Message) -> None:
        """Reset from a ``joined`` reply (also after a reconnect: ids change)."""
        self.room = str(reply.get("room", self.room))
        self.me = str(reply["participant_id"])
        self.music_allowed = bool(reply.get("music_allowed", False))
        self.participants = {}
        self.speaking_me = False
        for p in reply.get("participants", []):
            self._add(p)

    def _add(self, p: Message) -> Participant:
        pid = str(p["participant_id"])
        user_id = p.get("user_id")
        participant = Participant(
            pid, str(p.get("display_name") or pid),
            user_id if isinstance(user_id, int) else None, bool(p.get("muted", False)),
            bool(p.get("speaking", False)),
        )
        self.participants[pid] = participant
        return participant

    def name(self, pid: str) -> str:
        if pid == self.me:
            return f"{self.my_name or 'you'} (you)"
        p = self.participants.get(pid)
        return p.display_name if p else pid

    def apply(self, msg: Message) -> list[str]:
        """Update from one server event; returns notices worth showing the user."""
        kind = msg.get("type")
        if msg.get("room") not in (None, self.room):
            return []
        pid = str(msg.get("participant_id", ""))
        if kind == "participant_joined":
            p = self._add(msg)
            return [f"{p.display_name} joined"]
        if kind == "participant_left":
            gone = self.participants.pop(pid, None)
            return [f"{gone.display_name} left"] if gone else []
        if kind in ("speaking", "stopped_speaking"):
            talking = kind == "speaking"
            if pid == self.me:
                self.speaking_me = talking
            elif pid in self.participants:
                self.participants[pid].speaking = talking
            return []
        if kind == "nearby":
            return self._nearby(msg.get("people") or [])
        if kind == "participant_muted" and pid in self.participants:
            self.participants[pid].muted = bool(msg.get("muted"))
            return [f"{self.name(pid)} {'muted' if msg.get('muted') else 'unmuted'}"]
        return []

    def _nearby(self, people: list[Message]) -> list[str]:
        """The nearby room: whom we hear is whoever is close enough, at what distance."""
        before = {pid: p for pid, p in self.participants.items()}
        self.participants = {}
        for person in people:
            p = self._add(person)
            old = before.get(p.participant_id)
            if old is not None:
                p.speaking, p.gain, p.muted = old.speaking, old.gain, old.muted
            p.distance = str(person.get("distance", ""))
        if not people:
            return ["nearby: nobody within earshot"]
        return ["nearby: " + ", ".join(
            f"{p.display_name} ({p.distance})" if p.distance else p.display_name
            for p in self.participants.values()
        )]

    def find(self, query: str) -> Participant:
        """A participant by list number (1-based), exact name, name prefix or id."""
        others = list(self.participants.values())
        q = query.strip()
        if q.isdigit() and 1 <= int(q) <= len(others):
            return others[int(q) - 1]
        for test in (
            lambda p: p.participant_id == q,
            lambda p: p.display_name.casefold() == q.casefold(),
            lambda p: p.display_name.casefold().startswith(q.casefold()),
        ):
            hits = [p for p in others if test(p)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise LookupError(f"{q!r} matches {len(hits)} participants; use the number")
        raise LookupError(f"no participant {q!r} in the room")

    def render(self, muted: bool = False, talking: bool = True) -> str:
        """One line per participant: number, name, speaking/muted marks."""
        me = "  * " if self.speaking_me else "    "
        state = " [muted]" if muted else (" [push-to-talk: off air]" if not talking else "")
        lines = [f"room {self.room}: {len(self.participants) + 1} present",
                 f"{me}   {self.my_name or 'you'} (you){state}"]
        for n, p in enumerate(self.participants.values(), 1):
            mark = "  * " if p.speaking else "    "
            extra = (" [muted]" if p.muted else "") + (f" [volume {p.gain:g}]"
                                                       if p.gain != 1.0 else "")
            lines.append(f"{mark}{n:>2} {p.display_name}{extra}")
        return "\n".join(lines)


def room_node_lost(message: dict[str, Any], room: str) -> bool:
    """``left`` with reason ``host_lost`` or ``moved`` for our room, an ``error`` ``moved``,
    or the server's ``reconnect`` (it is draining): join again, on a live node."""
    if message.get("type") == "reconnect":
        return True
    if message.get("type") == "left":
        return message.get("room") == room and message.get("reason") in ("host_lost", "moved")
    return message.get("type") == "error" and message.get("code") == "moved"


def quality_line(message: dict[str, Any]) -> str:
    """A ``quality`` event as one console line: the class, then what it is made of."""
    parts = [f"connection quality: {message.get('quality')}"]
    for key, unit in (("loss_percent", "% loss"), ("jitter_ms", " ms jitter"),
                      ("rtt_ms", " ms RTT")):
        value = message.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{value:g}{unit}")
    return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")
