"""Ids from untrusted text: digits naming a possible row, else NotFound."""

from __future__ import annotations

import pytest

from common.errors import NotFound
from common.ids import ID_MAX, is_id_text, parse_id


@pytest.mark.parametrize("text", ["1", "42", str(ID_MAX), "007"])
def test_possible_ids(text: str) -> None:
    assert is_id_text(text)
    assert parse_id(text, "group") == int(text)


@pytest.mark.parametrize("text", [
    "", "0", "-1", "+1", " 1", "1 ", "1.0", "abc", "\u00b2", "\u0661", "1\u00b2",
    str(ID_MAX + 1), str(2**63 - 1), "9" * 19, "9" * 25, "9" * 5000,
])
def test_not_ids(text: str) -> None:
    assert not is_id_text(text)
    with pytest.raises(NotFound, match="no such group"):
        parse_id(text, "group")
