"""Plan limits looked up at the edge, before the group rules run.

The rules (``groups.service``) take limits as plain numbers; this module asks
billing for them, so groups never imports billing.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.service import entitlements_for_group
from groups.models import Invite
from signaling.deps import AppState


async def max_members_for_group(
    state: AppState, db: AsyncSession, invite_code: str, now: float
) -> int | None:
    """The member limit of the group an invite code points at (None: no limit known)."""
    invite = await db.get(Invite, invite_code) if 0 < len(invite_code) <= 32 else None
    if invite is None:
        return None
    entitlements = await entitlements_for_group(db, invite.group_id, now, state.plans)
    return entitlements.max_group_members
