"""TURN REST credentials in coturn's use-auth-secret format."""

from __future__ import annotations

import base64
import hashlib
import hmac

from signaling.turn import ice_servers, turn_credentials


def test_credentials_follow_the_turn_rest_scheme() -> None:
    username, password = turn_credentials("sekrit", "42", now=1000.0, ttl_s=600)
    assert username == "1600:42"
    # RFC draft-uberti-behave-turn-rest: password = base64(HMAC-SHA1(secret, username))
    expected = base64.b64encode(hmac.new(b"sekrit", b"1600:42", hashlib.sha1).digest()).decode()
    assert password == expected
    assert len(base64.b64decode(password)) == 20


def test_ice_servers_only_lists_what_is_configured() -> None:
    assert ice_servers([], [], None, "1", 0, 60) == []
    assert ice_servers([], ["turn:t:3478"], None, "1", 0, 60) == []  # no secret: no TURN
    servers = ice_servers(["stun:s:3478"], ["turn:t:3478?transport=udp"], "k", "7", 100, 60)
    assert servers[0] == {"urls": ["stun:s:3478"]}
    assert servers[1]["urls"] == ["turn:t:3478?transport=udp"]
    assert servers[1]["username"] == "160:7"
