"""What a request handler needs: the app's state, the caller, a DB session.

``AppState`` is built once in the app factory (the composition root) and
hangs off ``app.state.disco``; route modules get it through these FastAPI
dependencies, never through globals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from common.bus import LocalBus, RedisBus
from common.db import SessionFactory
from common.errors import Forbidden
from common.settings import Settings
from common.tasks import cancel_and_wait
from groups.accounts import current_user
from signaling.auth import Identity, TokenSigner, bearer_token

if TYPE_CHECKING:
    from billing.plans import PlanCatalog
    from billing.service import BillingService
    from groups.chat import ChatLog
    from groups.location.service import LocationService
    from groups.login_limits import LoginLimits
    from groups.push.dispatcher import PushDispatcher
    from signaling.cluster.base import Cluster, RelayService
    from signaling.music_uploads import MusicUploads
    from signaling.nearby import NearbyRoom
    from signaling.nearby_mesh import NearbyMesh
    from signaling.rooms import RoomRegistry

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass
class AppState:
    """Every service of one node, built once in ``signaling.app.create_app``.

    Each is a typed attribute that REST routes and WebSocket handlers share;
    a feature without configuration is still here as its null form (billing
    without Stripe, push senders that only log), never a missing key.
    """

    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    bus: LocalBus | RedisBus
    signer: TokenSigner
    plans: PlanCatalog
    """The deployment's plans (``DISCO_PLANS_FILE`` or the built-in ones)."""
    rooms: RoomRegistry
    nearby: NearbyRoom
    chat: ChatLog
    locations: LocationService
    billing: BillingService
    push: PushDispatcher
    limits: LoginLimits
    music_uploads: MusicUploads
    """Password attempts per account/address and the argon2 thread pool."""
    redis: Redis | None
    """The node's Redis client for shared keys (placement, rate limits), None without
    Redis; the bus keeps its own pub/sub connection."""
    cluster: Cluster
    """This node's view of the deployment (``LocalCluster`` alone, ``RedisCluster`` shared)."""
    relay: RelayService
    """Group rooms hosted by other nodes, relayed for this node's sessions (and theirs here)."""
    clock: Clock = time.time
    nearby_mesh: NearbyMesh | None = None
    """Nearby across nodes (positions by partition, voice piped), None without Redis."""
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    """Fire-and-forget work (``spawn``), awaited or cancelled at shutdown."""
    jobs: list[asyncio.Task[None]] = field(default_factory=list)
    """The node's long-running jobs (``start_job``), cancelled at shutdown."""

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``work`` without making the caller wait (kept referenced until done)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self.background.add(task)
        task.add_done_callback(self._finished)

    def start_job(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run one of the node's jobs (a loop) until shutdown."""
        self.jobs.append(asyncio.get_running_loop().create_task(work, name=name))

    async def cancel_background(self) -> None:
        tasks = [*self.jobs, *self.background]
        self.jobs.clear()
        await cancel_and_wait(*tasks)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.disco
    return state


State = Annotated[AppState, Depends(app_state)]


async def db_session(state: State) -> AsyncIterator[AsyncSession]:
    """Committed if the handler returns, rolled back if it raises.

    A handler may commit earlier itself (say, before publishing on the bus).
    """
    async with state.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


# scope="function": commit before the response is sent, so a client that acts
# on a reply (say, accepts the invite it was just given) sees the change.
Db = Annotated[AsyncSession, Depends(db_session, scope="function")]


async def current_identity(
    state: State, db: Db, authorization: Annotated[str | None, Header()] = None
) -> Identity:
    """The caller's token, checked; a user's account must exist at the token's generation.

    One query per request (FastAPI caches the dependency within a request).
    """
    identity = state.signer.verify(bearer_token(authorization), state.clock())
    if identity.user_id is not None:
        await current_user(db, identity.user_id, identity.generation)
    return identity


Caller = Annotated[Identity, Depends(current_identity)]


def current_user_id(identity: Caller) -> int:
    """The caller's user id (an account that still exists); guests are refused."""
    if identity.user_id is None:
        raise Forbidden("guest sessions can only use nearby rooms; register an account")
    return identity.user_id


UserId = Annotated[int, Depends(current_user_id)]
