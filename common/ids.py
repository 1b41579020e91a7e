"""Database ids from untrusted text (URL paths, room names). Pure.

Ids are positive integers that fit the id columns: ``sa.Integer`` in the
migrations, which is 32-bit on PostgreSQL (SQLite's stops at 2**63 - 1).
Text that is not such an id names nothing, so it is ``NotFound`` rather than
a database error: ``str.isdigit`` alone is not enough (it accepts ``"²"``,
which ``int`` refuses), and an id past the column's range overflows the
driver (asyncpg: "value out of int32 range"; SQLite past 2**63 - 1). Raise
``ID_MAX`` if the id columns become BIGINT.
"""

from __future__ import annotations

from common.errors import NotFound

ID_MAX = 2**31 - 1  # PostgreSQL INTEGER
ID_MAX_DIGITS = len(str(ID_MAX))


def is_id_text(text: str) -> bool:
    """True when ``text`` is ASCII digits naming a possible id (1..ID_MAX)."""
    return (0 < len(text) <= ID_MAX_DIGITS and text.isascii() and text.isdigit()
            and 0 < int(text) <= ID_MAX)


def parse_id(text: str, what: str) -> int:
    """The id in ``text``, or ``NotFound("no such <what>")``."""
    if not is_id_text(text):
        raise NotFound(f"no such {what}")
    return int(text)
