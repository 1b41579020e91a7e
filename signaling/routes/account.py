"""REST: leave for good (``DELETE /api/auth/me``) or take your data (``GET /api/auth/me/export``).

Deletion asks for the password again (it spends a password attempt like a
login), cancels the user's Stripe subscription first (if that fails, nothing
is deleted), then deletes everything that is theirs in one transaction
(``groups.erasure``). Afterwards every node hears it on the bus: the
member's groups see them leave, and their WebSockets close with 4401. Their
tokens die with the account row (``signaling.deps`` refuses a token whose
account is gone), on every node at once.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from billing.store import get_subscription
from common.errors import NotFound
from groups import accounts, erasure
from groups.models import User
from signaling.deps import Db, State, UserId
from signaling.routes.auth import announce_revoked, spend_attempt
from signaling.routes.groups import announce_membership

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Deletion(BaseModel):
    password: str = Field(max_length=1024)


@router.delete("/me", status_code=204)
async def delete_me(body: Deletion, request: Request, user_id: UserId, state: State,
                    db: Db) -> Response:
    user = await db.get(User, user_id)
    if user is None:
        raise NotFound("this account no longer exists")
    limits = await spend_attempt(state, request, user.username)
    await accounts.check_password(limits.passwords, user, body.password)
    await state.billing.cancel_for_deletion(user_id)
    done = await erasure.delete_account(db, user_id)
    await db.commit()
    log.info("account %s deleted: left %d group(s), %d handed over, %d deleted, "
             "%d location points", user_id, len(done.left_groups), len(done.new_owners),
             len(done.deleted_groups), done.location_points)
    await announce_revoked(state, user_id, None, "account_deleted")
    for group_id in done.left_groups:
        await announce_membership(state, group_id, user_id, "left")
    for group_id in done.deleted_groups:
        await announce_membership(state, group_id, user_id, "left")
    return Response(status_code=204)


@router.get("/me/export")
async def export_me(user_id: UserId, state: State, db: Db) -> dict[str, object]:
    data = await erasure.export_account(db, user_id)
    sub = await get_subscription(db, user_id)
    data["subscription"] = None if sub is None else {
        "plan": sub.plan, "status": sub.status, "source": sub.source,
        "current_period_end": sub.current_period_end,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "stripe_customer_id": sub.stripe_customer_id,
        "stripe_subscription_id": sub.stripe_subscription_id,
        "updated_at": sub.updated_at,
    }
    return {"exported_at": state.clock(), "format": "disco-export-1", **data}
