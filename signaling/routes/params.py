"""Path parameters that name database rows: ``NotFound`` (404) unless a possible id.

FastAPI's plain ``int`` would accept ``9999999999999999999999999`` and let the
database driver overflow (a 500); ``common.ids`` refuses anything past
``ID_MAX`` as a name of nothing (404). Use ``GroupId``, ``MemberId`` and
``PlaceId`` instead of ``int`` for ``{group_id}``, ``{member_id}`` and ``{place_id}``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from common.ids import parse_id


def _group_id(group_id: Annotated[str, Path()]) -> int:
    return parse_id(group_id, "group")


def _member_id(member_id: Annotated[str, Path()]) -> int:
    return parse_id(member_id, "member")


def _place_id(place_id: Annotated[str, Path()]) -> int:
    return parse_id(place_id, "place")


GroupId = Annotated[int, Depends(_group_id)]
MemberId = Annotated[int, Depends(_member_id)]
PlaceId = Annotated[int, Depends(_place_id)]
