"""Errors that cross module boundaries.

Hierarchy::

    DiscoError                 base; ``code`` is the wire/JSON error code
    ├── BadRequest             bad_request: malformed or out-of-range input
    │   └── MessageTooLarge    message_too_large: over the size limit
    ├── Unauthorized           unauthorized: missing, wrong or expired token
    ├── Forbidden              forbidden: authenticated but not allowed
    ├── NotFound               not_found: no such thing, or not yours to see
    ├── Conflict               conflict: duplicate, already done, wrong state
    │   └── Elsewhere          elsewhere: the room is hosted by another node
    ├── LimitExceeded          limit_exceeded: a plan's entitlement says no
    ├── RateLimited            rate_limited: too many requests, try later
    └── Unavailable            unavailable: a dependency is not configured/up

The mapping from these to HTTP statuses and WebSocket close codes lives in
one table at the edge: ``signaling.edge_errors``.
"""

from __future__ import annotations


class DiscoError(Exception):
    code = "error"

    def __init__(self, message: str, *, detail: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class BadRequest(DiscoError):
    code = "bad_request"


class MessageTooLarge(BadRequest):
    code = "message_too_large"


class Unauthorized(DiscoError):
    code = "unauthorized"


class Forbidden(DiscoError):
    code = "forbidden"


class NotFound(DiscoError):
    code = "not_found"


class Conflict(DiscoError):
    code = "conflict"


class Elsewhere(Conflict):
    """A room hosted by another node of the deployment (``detail``: node, url)."""

    code = "elsewhere"
    grant: dict[str, object] | None = None
    """What the refusing node checked of the join (the caller is a member, the group's
    entitlements), relayed with it to the hosting node (``signaling.ws.relay``): a media
    node has no database to check again."""


class LimitExceeded(DiscoError):
    code = "limit_exceeded"


class RateLimited(DiscoError):
    code = "rate_limited"


class Unavailable(DiscoError):
    code = "unavailable"
