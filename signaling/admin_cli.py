"""``disco admin``: subscriptions, webhook deliveries, and manual plan grants.

Run against the same database as the server (same settings / ``--config``);
migrations are applied first so the commands work on a fresh database too.
A grant is announced on the bus when ``DISCO_REDIS_URL`` is set, so live
rooms on every node follow at once; without Redis the nodes' periodic
re-check (``DISCO_ENTITLEMENTS_RECHECK_S``) picks it up within seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from collections.abc import Sequence

from billing import admin
from billing.plans import ENTITLEMENTS_TOPIC, load_catalog
from billing.service import entitlements_notice
from common.bus import make_bus
from common.db import make_engine, make_session_factory, migrate, session_scope
from common.errors import DiscoError
from common.settings import Settings


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


async def _run(args: argparse.Namespace, settings: Settings) -> str:
    catalog = load_catalog(settings.plans_file)
    engine = make_engine(settings.database_url)
    try:
        await migrate(engine)
        sessions = make_session_factory(engine)
        async with session_scope(sessions) as session:
            if args.admin_command == "subscriptions":
                subs = await admin.list_subscriptions(session)
                return _table(
                    ("user", "id", "plan", "status", "source", "period end", "grace until",
                     "customer"),
                    [(s.username, s.user_id, s.plan, s.status, s.source,
                      _when(s.current_period_end), _when(s.grace_until),
                      s.stripe_customer_id or "-") for s in subs],
                ) if subs else "no subscriptions yet"
            if args.admin_command == "webhooks":
                events = await admin.recent_webhooks(session, args.limit)
                return _table(
                    ("received", "event", "type", "outcome", "user", "detail"),
                    [(_when(e.received_at), e.id, e.type, e.outcome,
                      e.user_id if e.user_id is not None else "-", e.detail) for e in events],
                ) if events else "no webhook deliveries yet"
            now = datetime.datetime.now(datetime.UTC).timestamp()
            sub = await admin.grant_plan(session, args.user, args.plan, catalog, now, args.days)
            notice = await entitlements_notice(session, sub.user_id, now, catalog)
        until = _when(sub.current_period_end) if sub.current_period_end else "no end date"
        if settings.redis_url:  # committed above; now tell every node's live rooms
            await _announce(settings.redis_url, settings.redis_prefix, notice)
        return f"user {sub.user_id} is now on {sub.plan} ({until})"
    finally:
        await engine.dispose()


async def _announce(redis_url: str, prefix: str, notice: dict[str, object]) -> None:
    bus = make_bus(redis_url, prefix)
    await bus.start()
    try:
        await bus.publish(ENTITLEMENTS_TOPIC, notice)
    finally:
        await bus.close()


def run_admin(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``disco admin`` action; returns the process exit code."""
    try:
        print(asyncio.run(_run(args, settings)))
    except DiscoError as exc:
        print(f"disco admin: {exc.message}", file=sys.stderr)
        return 1
    return 0
