"""ICE server list for clients, with TURN REST credentials for coturn.

coturn's ``use-auth-secret`` scheme: username ``"<expiry-unix>:<user>"``,
password ``base64(HMAC-SHA1(secret, username))``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any


def turn_credentials(secret: str, user: str, now: float, ttl_s: int) -> tuple[str, str]:
    username = f"{int(now) + ttl_s}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(
    stun_urls: list[str],
    turn_urls: list[str],
    turn_secret: str | None,
    user: str,
    now: float,
    ttl_s: int,
) -> list[dict[str, Any]]:
    """The ``iceServers`` list, in the shape of WebRTC's RTCIceServer."""
    servers: list[dict[str, Any]] = [{"urls": list(stun_urls)}] if stun_urls else []
    if turn_urls and turn_secret:
        username, credential = turn_credentials(turn_secret, user, now, ttl_s)
        servers.append({"urls": list(turn_urls), "username": username, "credential": credential})
    return servers
