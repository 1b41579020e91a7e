"""The wire schema's parser: every hostile frame gets a code, never an exception. Pure."""

from __future__ import annotations

import json

import pytest

from protocol import wire
from protocol.wire import (
    REQUEST_ID_MAX_INT,
    Ping,
    WireError,
    parse_client_message,
    server_message,
)

MAX_BYTES = 65_536


@pytest.mark.parametrize(("frame", "code", "request_id"), [
    ('{"type": [1]}', "unknown_type", None),
    ('{"type": {"a": 1}, "id": 3}', "unknown_type", 3),
    ('{"type": null}', "unknown_type", None),
    ('{"type": ' + "[" * 900 + "]" * 900 + "}", "unknown_type", None),
    ('{"type": "ping", "x": ' + "[" * 5_000 + "]" * 5_000 + "}", "bad_json", None),
    ('{"type": "ping", "id": ' + "9" * 4_400 + "}", "bad_json", None),
    ('{"type": "ping", "id": ' + "9" * 100 + "}", "bad_request", None),
    ('{"type": "ping", "id": ' + str(REQUEST_ID_MAX_INT + 1) + "}", "bad_request", None),
    ('{"type": "ping", "id": "' + "r" * 65 + '"}', "bad_request", None),
    ('{"type": "ping", "id": true}', "bad_request", None),
    ('{"type": "join", "room": "group:1", "radius_m": NaN}', "bad_request", None),
    ('{"type": "location", "lat": 1e999, "lon": 0, "accuracy_m": 5}', "bad_request", None),
    ("[]", "bad_json", None),
    ("{", "bad_json", None),
])
def test_hostile_frames_get_a_code(frame: str, code: str, request_id: object) -> None:
    with pytest.raises(WireError) as raised:
        parse_client_message(frame, MAX_BYTES)
    assert raised.value.code == code
    assert raised.value.request_id == request_id
    assert len(raised.value.message) < 200


@pytest.mark.parametrize("request_id", [0, REQUEST_ID_MAX_INT, -REQUEST_ID_MAX_INT, "r" * 64])
def test_request_ids_within_bounds_are_kept(request_id: object) -> None:
    frame = '{"type": "ping", "id": ' + (f'"{request_id}"' if isinstance(request_id, str)
                                         else str(request_id)) + "}"
    message = parse_client_message(frame, MAX_BYTES)
    assert isinstance(message, Ping) and message.id == request_id
    assert server_message("pong", message.id)["id"] == request_id


def test_a_shared_message_is_serialized_once_as_any_other_would_be() -> None:
    event = {"type": "speaking", "room": "group:1", "participant_id": "p_1", "level": -20.5}
    shared = wire.Shared(event)
    assert shared == event and json.loads(wire.encode(shared)) == event
    assert wire.encode(shared) == wire.encode(dict(event))  # the same frame text
    assert wire.encode(shared) is wire.encode(shared)  # built once
