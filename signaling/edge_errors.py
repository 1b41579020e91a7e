"""The one table that maps errors to HTTP statuses and WebSocket close codes."""

from __future__ import annotations

import math

from common import errors

HTTP_STATUS: dict[type[errors.DiscoError], int] = {
    errors.MessageTooLarge: 413,
    errors.BadRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.LimitExceeded: 403,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}

# Close codes in the 4000-4999 private range; 4401 mirrors HTTP 401.
WS_CLOSE_UNAUTHORIZED = 4401


def http_status(exc: errors.DiscoError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]  # type: ignore[index]
    return 500


def error_body(exc: errors.DiscoError) -> dict[str, object]:
    body: dict[str, object] = {"error": exc.code, "message": exc.message}
    if exc.detail:
        body["detail"] = exc.detail
    return body


def http_headers(exc: errors.DiscoError) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1) when the error says when to retry."""
    retry = exc.detail.get("retry_after_s")
    if isinstance(retry, int | float) and not isinstance(retry, bool) and math.isfinite(retry):
        return {"Retry-After": str(max(1, math.ceil(retry)))}
    return {}
