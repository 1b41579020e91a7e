"""Device tokens and muted categories in the database. The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from common.errors import NotFound
from groups.push.messages import Category, clean_categories, clean_token
from groups.push.models import PushDevice, PushSettings


async def register_device(session: AsyncSession, user_id: int, platform: str, token: str,
                          now: float) -> PushDevice:
    """Register (or re-register) a token for ``user_id``; the newest owner of a token wins."""
    kind, token = clean_token(platform, token)
    rows = await session.exec(select(PushDevice).where(PushDevice.token == token))
    device = rows.first()
    if device is None:
        device = PushDevice(user_id=user_id, platform=kind.value, token=token, created_at=now,
                            last_seen_at=now)
    else:
        device.user_id, device.platform, device.last_seen_at = user_id, kind.value, now
    session.add(device)
    await session.flush()
    return device


async def remove_device(session: AsyncSession, user_id: int, token: str) -> None:
    """Remove one of the caller's tokens; someone else's token is "not found"."""
    rows = await session.exec(
        select(PushDevice).where(PushDevice.token == token.strip(),
                                 PushDevice.user_id == user_id)
    )
    device = rows.first()
    if device is None:
        raise NotFound("no such device token")
    await session.delete(device)
    await session.flush()


async def delete_tokens(session: AsyncSession, tokens: Iterable[str]) -> int:
    """Drop tokens the push service reported as invalid; returns how many went."""
    tokens = list(tokens)
    if not tokens:
        return 0
    result = await session.exec(  # type: ignore[call-overload]
        delete(PushDevice).where(col(PushDevice.token).in_(tokens))
    )
    return int(result.rowcount or 0)


async def devices_for(session: AsyncSession, user_ids: Iterable[int]) -> list[PushDevice]:
    ids = sorted(set(user_ids))
    if not ids:
        return []
    rows = await session.exec(
        select(PushDevice).where(col(PushDevice.user_id).in_(ids)).order_by(col(PushDevice.id))
    )
    return list(rows.all())


async def user_devices(session: AsyncSession, user_id: int) -> list[PushDevice]:
    return await devices_for(session, [user_id])


async def muted_categories(session: AsyncSession, user_id: int) -> frozenset[Category]:
    settings = await session.get(PushSettings, user_id)
    if settings is None or not settings.muted:
        return frozenset()
    return clean_categories(settings.muted.split(","))


async def users_muting(session: AsyncSession, user_ids: Iterable[int],
                       category: Category) -> set[int]:
    """Which of ``user_ids`` muted ``category``."""
    ids = sorted(set(user_ids))
    if not ids:
        return set()
    rows = await session.exec(select(PushSettings).where(col(PushSettings.user_id).in_(ids)))
    return {s.user_id for s in rows.all() if category.value in s.muted.split(",")}


async def set_muted(session: AsyncSession, user_id: int, names: Iterable[str],
                    now: float) -> frozenset[Category]:
    muted = clean_categories(names)
    settings = await session.get(PushSettings, user_id)
    value = ",".join(sorted(c.value for c in muted))
    if settings is None:
        settings = PushSettings(user_id=user_id, muted=value, updated_at=now)
    else:
        settings.muted, settings.updated_at = value, now
    session.add(settings)
    await session.flush()
    return muted
