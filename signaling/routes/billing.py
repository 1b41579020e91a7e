"""REST: plans, checkout, customer portal, Stripe webhooks, the caller's subscription.

The webhook route reads the raw body (the signature covers the exact bytes)
and answers 400 for anything that fails verification, with nothing changed;
every verified event gets 200, including types we ignore, so Stripe stops
retrying them. When an event changes a user's plan, a message on the bus
topic ``billing:entitlements`` names the user and the groups they own, so
every node can re-check live rooms (music) at once; an upgrade simply takes
effect on the next request. A change the bus does not carry (``disco admin
grant`` on a deployment without Redis) is caught by each node re-reading the
plans behind its live group rooms every ``entitlements_recheck_s`` (one query).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from billing.plans import ENTITLEMENTS_TOPIC, Plan, PlanCatalog
from billing.service import (
    BillingService,
    entitlements_for_user,
    entitlements_notice,
    music_by_group,
)
from billing.store import get_subscription
from common.db import SessionFactory
from common.settings import Settings
from signaling import live_music
from signaling.deps import AppState, Db, State, UserId
from signaling.rooms import group_of

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/billing", tags=["billing"])

class CheckoutBody(BaseModel):
    plan: str = Field(max_length=64)


def make_billing_service(settings: Settings, catalog: PlanCatalog, sessions: SessionFactory,
                         clock: Callable[[], float]) -> BillingService:
    """The billing service on the plans the app loaded; Stripe only when its key is set."""
    gateway = None
    if settings.stripe_api_key:
        from billing.stripe_api import StripeGateway  # stripe: only when configured

        gateway = StripeGateway(settings.stripe_api_key, settings.stripe_api_base)
        if not settings.stripe_webhook_secret:
            logger.warning("DISCO_STRIPE_API_KEY is set but DISCO_STRIPE_WEBHOOK_SECRET is not: "
                           "payments will never reach Disco; see docs/billing.md")
    else:
        logger.info("billing: no Stripe key; everyone is on the %s plan unless granted",
                    catalog.default.name)
    return BillingService(
        sessions, catalog, gateway=gateway,
        webhook_secret=settings.stripe_webhook_secret, public_url=settings.public_url,
        clock=clock,
    )


async def recheck_rooms(state: AppState) -> int:
    """Re-read the plans behind this node's live group rooms; apply what changed. The
    answer for the rooms it relays to other nodes goes to them as notices (a media node
    cannot read the plans)."""
    live = [g for r in state.rooms.rooms() if (g := group_of(r.room_id)) is not None]
    relayed = sorted({g for room in state.relay.relayed_rooms()
                      if (g := group_of(room)) is not None} - set(live))
    if not live and not relayed:
        return 0
    async with state.sessions() as db:
        allowed = await music_by_group(db, live + relayed, state.clock(), state.plans)
    changed = live_music.set_music(state.rooms, {g: allowed[g] for g in live if g in allowed})
    if changed:
        logger.info("re-check: music changed in %d live room(s)", changed)
    for music in (True, False):
        groups = [g for g in relayed if allowed.get(g) is music]
        if groups:  # applied only where it changes something (live_music.set_music)
            await state.bus.publish(ENTITLEMENTS_TOPIC, {"group_ids": groups, "music": music})
    return changed


async def follow_entitlements(state: AppState) -> None:
    """Every node applies every plan change to its own rooms (a downgrade stops music),
    and re-checks its live rooms every ``entitlements_recheck_s``.

    A job of the node, started by the composition root and cancelled at shutdown."""
    await live_music.follow_notices(state.bus, state.rooms, lambda: recheck_rooms(state),
                                    state.settings.entitlements_recheck_s)


def plan_json(plan: Plan) -> dict[str, object]:
    return {"name": plan.name, "display_name": plan.display_name, "paid": plan.paid,
            "max_group_members": plan.max_group_members, "voice": plan.voice,
            "music": plan.music, "history_days": plan.history_days,
            "max_places": plan.max_places}


async def announce_entitlements(state: AppState, user_id: int) -> None:
    """Tell every node that ``user_id``'s limits (and so their groups') changed."""
    async with state.sessions() as db:
        notice = await entitlements_notice(db, user_id, state.clock(), state.plans)
    await state.bus.publish(ENTITLEMENTS_TOPIC, notice)


@router.get("/plans")
async def plans(state: State) -> dict[str, object]:
    catalog = state.plans
    return {"default": catalog.default.name, "plans": [plan_json(p) for p in catalog]}


@router.post("/checkout")
async def checkout(body: CheckoutBody, user_id: UserId, state: State) -> dict[str, str]:
    return {"url": await state.billing.checkout(user_id, body.plan)}


@router.post("/portal")
async def portal(user_id: UserId, state: State) -> dict[str, str]:
    return {"url": await state.billing.portal(user_id)}


@router.post("/webhook")
async def webhook(request: Request, state: State) -> dict[str, object]:
    service = state.billing
    raw = await request.body()
    result = await service.handle_webhook(raw, request.headers.get("stripe-signature"))
    if result.changed and result.user_id is not None:
        try:
            await announce_entitlements(state, result.user_id)
        except Exception:  # the change is committed; a lost notice must not fail the delivery
            logger.exception("could not announce new entitlements of user %s", result.user_id)
    return {"received": True, "event": result.event_id, "outcome": result.outcome.value}


@router.get("/subscription")
async def subscription(user_id: UserId, state: State, db: Db) -> dict[str, object]:
    catalog = state.plans
    now = state.clock()
    sub = await get_subscription(db, user_id)
    ent = await entitlements_for_user(db, user_id, now, catalog)
    detail = None
    if sub is not None:
        detail = {"plan": sub.plan, "status": sub.status, "source": sub.source,
                  "current_period_end": sub.current_period_end,
                  "cancel_at_period_end": sub.cancel_at_period_end,
                  "grace_until": sub.grace_until,
                  "has_billing_account": sub.stripe_customer_id is not None}
    return {"plan": ent.plan, "entitlements": ent.to_json(), "subscription": detail}
