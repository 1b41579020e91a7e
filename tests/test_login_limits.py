"""Password attempts are limited per account and per client address (429 with
Retry-After, on a frozen clock), and argon2 runs in a bounded thread pool that
answers 503 at once when full (issue #12, finding 3)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from common.errors import RateLimited, Unavailable
from common.settings import Settings
from groups.login_limits import account_key, address_key
from groups.passwords import PasswordHashing, hash_now
from signaling.edge_errors import http_headers
from tests.server_helpers import PASSWORD, LiveServer, live_server

NOW = 1_800_000_000.0


class FrozenClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_address_key(host: str | None, key: str) -> None:
    assert address_key(host) == key


def test_account_key_normalises() -> None:
    assert account_key("  Alice ") == "alice"
    assert len(account_key("x" * 500)) == 64


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[tuple[LiveServer, FrozenClock]]:
    limited = settings.model_copy(update={
        "login_account_burst": 3, "login_account_per_min": 6.0,   # one per 10 s
        "login_address_burst": 5, "login_address_per_min": 12.0,  # one per 5 s
    })
    async with live_server(limited) as s:
        clock = FrozenClock(NOW)
        s.app_state.clock = clock
        yield s, clock


async def _login(server: LiveServer, username: str, password: str = "wrong password 1"
                 ) -> tuple[int, str | None]:
    r = await server.http.post("/api/auth/login", json={"username": username,
                                                        "password": password})
    return r.status_code, r.headers.get("retry-after")


async def test_per_account_limit_with_retry_after(
    server: tuple[LiveServer, FrozenClock],
) -> None:
    s, clock = server
    await s.register("alice")  # spends one attempt of alice's bucket and the address's
    assert [await _login(s, "alice") for _ in range(2)] == [(401, None)] * 2
    status, retry = await _login(s, "ALICE ")  # the same account however it is typed
    assert (status, retry) == (429, "10")
    r = await s.http.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 429, "the right password does not skip the limit"
    body = r.json()
    assert body["error"] == "rate_limited" and body["detail"]["retry_after_s"] == 10.0
    clock.now += 10.0
    r = await s.http.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200, r.text


async def test_per_address_limit_with_retry_after(
    server: tuple[LiveServer, FrozenClock],
) -> None:
    s, clock = server
    results = [await _login(s, f"user{n}") for n in range(5)]
    assert results == [(401, None)] * 5  # five accounts, one address: the address's burst
    assert await _login(s, "user9") == (429, "5")
    clock.now += 2.0
    assert await _login(s, "user9") == (429, "3")
    clock.now += 3.0
    assert await _login(s, "user9") == (401, None)
    # registering checks passwords too, so it spends from the same buckets
    r = await s.http.post("/api/auth/register", json={"username": "newbie",
                                                      "password": PASSWORD})
    assert r.status_code == 429 and r.headers["retry-after"] == "5"


async def test_full_password_pool_answers_at_once() -> None:
    pool = PasswordHashing(workers=1, max_waiting=1)
    stored = hash_now(PASSWORD)
    first = asyncio.create_task(pool.verify(stored, PASSWORD))
    second = asyncio.create_task(pool.verify(stored, "wrong"))
    await asyncio.sleep(0)
    assert pool.in_flight == 2
    started = asyncio.get_running_loop().time()
    with pytest.raises(Unavailable) as refused:
        await pool.verify(stored, PASSWORD)
    assert asyncio.get_running_loop().time() - started < 0.05
    assert refused.value.detail["retry_after_s"] == 1.0
    assert await first is True and await second is False
    assert pool.in_flight == 0 and pool.refused == 1
    assert await pool.verify(None, PASSWORD) is False  # no such user: same work, no match


def test_pool_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        PasswordHashing(workers=0)
    with pytest.raises(ValueError):
        PasswordHashing(workers=1, max_waiting=-1)


def test_retry_after_header_from_the_error() -> None:
    assert http_headers(Unavailable("busy", detail={"retry_after_s": 0.2})) == {
        "Retry-After": "1"}
    assert http_headers(RateLimited("x", detail={"retry_after_s": 9.01})) == {
        "Retry-After": "10"}
    assert http_headers(RateLimited("x")) == {}
    assert http_headers(RateLimited("x", detail={"retry_after_s": float("nan")})) == {}
