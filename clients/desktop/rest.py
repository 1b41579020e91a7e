"""REST for the desktop client: log in (user, guest or token) and find the room.

Failures become the client's exit-coded errors: an unreachable server, a
refused login or token, a group that is not there.
"""

from __future__ import annotations

from typing import Any

import httpx

from clients.desktop import protocol
from clients.desktop.errors import AuthFailed, ClientError, RoomNotFound, ServerUnreachable
from clients.desktop.options import Options

HTTP_TIMEOUT_S = 10.0


async def log_in(options: Options) -> tuple[str, str]:
    """The session's token and the room it joins (``nearby`` or ``group:<id>``)."""
    async with _client(options) as http:
        token = await _token(http, options)
        if options.nearby:
            return token, protocol.NEARBY_ROOM
        assert options.group is not None
        reply = await _get(http, "/api/groups", token)
        return token, protocol.resolve_group(reply, options.group)


async def fresh_token(options: Options) -> str:
    """Log in again (after the server refused an old token)."""
    async with _client(options) as http:
        return await _token(http, options)


def _client(options: Options) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=protocol.http_base(options.server), timeout=HTTP_TIMEOUT_S)


async def _token(http: httpx.AsyncClient, o: Options) -> str:
    if o.token:
        return o.token
    body: dict[str, str | None]
    if o.guest is not None:
        path, body = "/api/auth/guest", {"display_name": o.guest}
    else:
        path, body = "/api/auth/login", {"username": o.username, "password": o.password}
    try:
        r = await http.post(path, json=body)
    except httpx.HTTPError as exc:
        raise _unreachable(http, exc) from None
    return protocol.token_from_login(r.status_code, _json(r))


async def _get(http: httpx.AsyncClient, path: str, token: str) -> Any:
    try:
        r = await http.get(path, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        raise _unreachable(http, exc) from None
    body = _json(r)
    if r.status_code == 401:
        raise AuthFailed(f"the server rejected the token: {_message(body)}")
    if r.status_code == 403:
        raise RoomNotFound(f"not allowed to list groups: {_message(body)}")
    if r.status_code != 200:
        raise ClientError(f"GET {path} failed ({r.status_code}): {_message(body)}")
    return body


def _unreachable(http: httpx.AsyncClient, exc: httpx.HTTPError) -> ServerUnreachable:
    return ServerUnreachable(f"cannot reach the server at {http.base_url}: "
                             f"{exc or type(exc).__name__}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"message": response.text[:200]}


def _message(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)
    return str(body)[:200]
