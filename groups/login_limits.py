"""What guards password work: attempts per account and per client address, and
the bounded pool that hashes and checks passwords off the event loop.

Every login (and every other request that checks a password: registration,
password change, account deletion) first spends a token from the client
address's bucket, then one from the account's (the username as typed,
normalised, whether or not it exists, so the answers do not reveal which
accounts exist). An empty bucket is ``RateLimited`` (429 with
``Retry-After``) before any hashing happens. With Redis configured the
buckets are shared by every node (``groups.limiter.RedisLimiter``).

IPv6 clients are counted per /64 (one host usually holds a whole /64).
Behind a proxy the address is the proxy's unless the ASGI server is told to
trust its forwarded headers (uvicorn ``--forwarded-allow-ips``).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.errors import RateLimited
from common.settings import Settings
from groups.limiter import Limiter, make_limiter
from groups.passwords import PasswordHashing

if TYPE_CHECKING:
    import redis.asyncio as aioredis

USERNAME_KEY_MAX_CHARS = 64
IPV6_PREFIX_BITS = 64
S_PER_MIN = 60.0


def account_key(username: str) -> str:
    return username.strip().lower()[:USERNAME_KEY_MAX_CHARS]


def address_key(host: str | None) -> str:
    """The bucket for a client address: IPv4 as is, IPv6 by its /64."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX_BITS), strict=False))
    return str(address)


@dataclass
class LoginLimits:
    per_account: Limiter
    per_address: Limiter
    passwords: PasswordHashing

    async def check(self, username: str, address: str | None, now: float) -> None:
        """Spend one attempt for the address, then for the account; ``RateLimited`` if out."""
        retry_s = await self.per_address.take(address_key(address), now)
        if retry_s > 0:
            raise _limited("this address", self.per_address, retry_s)
        retry_s = await self.per_account.take(account_key(username), now)
        if retry_s > 0:
            raise _limited("this account", self.per_account, retry_s)

    async def close(self) -> None:
        self.passwords.close()


def _limited(who: str, limiter: Limiter, retry_s: float) -> RateLimited:
    per_min = limiter.rate_per_s * S_PER_MIN
    return RateLimited(
        f"too many password attempts for {who}: {limiter.burst} at once, then "
        f"{per_min:g} a minute; try again in {math.ceil(retry_s)} s",
        detail={"retry_after_s": round(retry_s, 3)},
    )


def make_login_limits(settings: Settings, client: aioredis.Redis | None) -> LoginLimits:
    """Shared buckets in Redis when the node has a ``client``, else this process's."""
    prefix = settings.redis_prefix
    return LoginLimits(
        per_account=make_limiter(client, "login:account",
                                 settings.login_account_per_min / S_PER_MIN,
                                 settings.login_account_burst, prefix),
        per_address=make_limiter(client, "login:address",
                                 settings.login_address_per_min / S_PER_MIN,
                                 settings.login_address_burst, prefix),
        passwords=PasswordHashing(settings.password_workers),
    )
