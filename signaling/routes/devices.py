"""REST: push device tokens and push settings.

The app's push dispatcher is ``state.push`` (built in the composition root);
``signaling.push_hooks`` decides when to push and to whom.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from common.errors import Unavailable
from groups.push import store
from groups.push.messages import Category
from signaling.deps import Db, State, UserId

router = APIRouter(prefix="/api", tags=["push"])

class DeviceBody(BaseModel):
    platform: str = Field(max_length=16)
    token: str = Field(max_length=4096)


class PushSettingsBody(BaseModel):
    muted: list[str] = Field(max_length=16)


@router.post("/devices", status_code=201)
async def register_device(body: DeviceBody, user_id: UserId, state: State, db: Db
                          ) -> dict[str, object]:
    device = await store.register_device(db, user_id, body.platform, body.token, state.clock())
    await db.commit()  # before the response: the Db dependency's own commit runs after it
    return {"platform": device.platform, "token": device.token}


@router.get("/devices")
async def list_devices(user_id: UserId, db: Db) -> dict[str, object]:
    devices = await store.user_devices(db, user_id)
    return {"devices": [{"platform": d.platform, "token": d.token, "created_at": d.created_at}
                        for d in devices]}


@router.delete("/devices/{token}", status_code=204)
async def remove_device(token: str, user_id: UserId, db: Db) -> Response:
    await store.remove_device(db, user_id, token)
    await db.commit()
    return Response(status_code=204)


@router.get("/push/settings")
async def get_settings(user_id: UserId, db: Db) -> dict[str, object]:
    muted = await store.muted_categories(db, user_id)
    return {"muted": sorted(c.value for c in muted), "categories": [c.value for c in Category]}


@router.put("/push/settings")
async def put_settings(body: PushSettingsBody, user_id: UserId, state: State, db: Db
                       ) -> dict[str, object]:
    muted = await store.set_muted(db, user_id, body.muted, state.clock())
    await db.commit()
    return {"muted": sorted(c.value for c in muted), "categories": [c.value for c in Category]}


@router.get("/push/webpush")
async def webpush_key(_user_id: UserId, state: State) -> dict[str, object]:
    """The VAPID public key a browser subscribes with (its ``applicationServerKey``).

    Subscribe in the page, then register the subscription as a device:
    ``POST /api/devices {"platform": "web", "token": JSON.stringify(subscription)}``.
    """
    from groups.push.webpush import VapidKeys

    key = state.settings.vapid_private_key
    if not key:
        raise Unavailable("Web Push is off on this server (DISCO_VAPID_PRIVATE_KEY is not set)")
    return {"public_key": VapidKeys.from_private(key).public_key}
