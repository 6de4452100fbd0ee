"""The Redis L2: shared by replicas, encrypted values bound to their keys, and outages that cost nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from entra_mw import EntraConfig
from entra_mw._acquisition._redis import RedisStore
from entra_mw._acquisition._types import AccessToken, TokenRequest
from entra_mw._acquisition.cache import TokenCache
from entra_mw.testing import FakeClock
from tests._redis import RedisServer

from ._tokens import CLIENT, TENANT, Fetcher, obo_request

pytestmark = pytest.mark.redis

KEY = "0123456789abcdef0123456789abcdef"


def never(req: TokenRequest) -> AccessToken:
    raise AssertionError("should have been served from the cache")


async def anever(req: TokenRequest) -> AccessToken:
    raise AssertionError("should have been served from the cache")


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def replicas(redis_url: str, redis_prefix: str, fake_clock: FakeClock) -> Iterator[list[TokenCache]]:
    """Two caches ("replicas") sharing one Redis, encrypted with the same key."""
    caches = [
        TokenCache(
            clock=fake_clock, l2=RedisStore(redis_url, prefix=redis_prefix, encryption_key=KEY, clock=fake_clock)
        )
        for _ in range(2)
    ]
    try:
        yield caches
    finally:
        for cache in caches:
            cache.close()


def store_of(cache: TokenCache) -> RedisStore:
    assert isinstance(cache.l2, RedisStore)
    return cache.l2


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # The outage warnings (the plaintext warning of a store without a key is tested on its own).
    return [
        r
        for r in caplog.records
        if r.name.startswith("entra_mw") and r.levelno >= logging.WARNING and "plaintext" not in r.getMessage()
    ]


# -- sharing ---------------------------------------------------------------------------------------------


def test_a_token_fetched_by_one_replica_is_served_by_the_other(
    replicas: list[TokenCache], fake_clock: FakeClock
) -> None:
    a, b = replicas
    fetch = Fetcher(fake_clock)
    token = a.get_or_fetch(obo_request(), fetch)
    shared = b.get_or_fetch(obo_request(), never)
    assert shared == token
    assert b.get_or_fetch(obo_request(), never) is shared  # now from b's L1
    assert (b.stats.l2_hits, b.stats.fetches, b.stats.hits) == (1, 0, 1)
    assert fetch.calls == 1


def test_plain_values_and_ttl(redis_url: str, redis_prefix: str, fake_clock: FakeClock, raw: Any) -> None:
    store = RedisStore(redis_url, prefix=redis_prefix, clock=fake_clock)
    cache = TokenCache(clock=fake_clock, l2=store, refresh_margin=300)
    cache.get_or_fetch(obo_request(), Fetcher(fake_clock, refresh_in=1800))
    rkey = store.redis_key(obo_request().cache_key())
    assert rkey.startswith(redis_prefix + "at:")
    assert "user-1" not in rkey
    value = raw.get(rkey)
    assert b'"token":"secret-token-1"' in value
    assert b'"refresh_on":' in value
    assert 3590 <= raw.ttl(rkey) <= 3600  # until expires_on: served while a due refresh fails
    cache.close()


def test_encrypted_values_hide_the_token(replicas: list[TokenCache], fake_clock: FakeClock, raw: Any) -> None:
    a, b = replicas
    token = a.get_or_fetch(obo_request(), Fetcher(fake_clock))
    value = raw.get(store_of(a).redis_key(obo_request().cache_key()))
    assert value.startswith(b"\x01")
    assert b"secret-token" not in value
    assert b"expires_on" not in value
    assert b.get_or_fetch(obo_request(), never) == token


@pytest.mark.parametrize("other_key", ["another-key-entirely-0123456789", None])
def test_a_value_sealed_with_another_key_is_a_miss(
    redis_url: str, redis_prefix: str, fake_clock: FakeClock, raw: Any, other_key: str | None
) -> None:
    writer = RedisStore(redis_url, prefix=redis_prefix, encryption_key=KEY, clock=fake_clock)
    reader = RedisStore(redis_url, prefix=redis_prefix, encryption_key=other_key, clock=fake_clock)
    key = obo_request().cache_key()
    writer.set(key, Fetcher(fake_clock)(obo_request()), 600)
    assert reader.get(key) is None
    assert raw.exists(writer.redis_key(key)) == 0  # an unreadable value is deleted
    writer.close()
    reader.close()


def test_plain_value_planted_in_an_encrypted_store_is_refused(
    redis_url: str, redis_prefix: str, fake_clock: FakeClock, raw: Any
) -> None:
    plain = RedisStore(redis_url, prefix=redis_prefix, clock=fake_clock)
    sealed = RedisStore(redis_url, prefix=redis_prefix, encryption_key=KEY, clock=fake_clock)
    key = obo_request().cache_key()
    plain.set(key, Fetcher(fake_clock)(obo_request()), 600)
    assert sealed.get(key) is None
    plain.close()
    sealed.close()


def test_a_sealed_value_moved_to_another_key_does_not_open(
    redis_url: str, redis_prefix: str, fake_clock: FakeClock, raw: Any
) -> None:
    store = RedisStore(redis_url, prefix=redis_prefix, encryption_key=KEY, clock=fake_clock)
    alice, mallory = obo_request("alice").cache_key(), obo_request("mallory").cache_key()
    store.set(alice, Fetcher(fake_clock)(obo_request("alice")), 600)
    raw.set(store.redis_key(mallory), raw.get(store.redis_key(alice)))
    assert store.get(mallory) is None
    assert store.get(alice) is not None
    store.close()


@pytest.mark.parametrize(
    "value",
    [b"garbage", b"{}", b"[1,2]", b'{"token":"t","expires_on":"soon","scopes":[],"token_type":"Bearer"}', b"\xff"],
)
def test_garbage_is_a_miss_and_is_deleted(
    redis_url: str, redis_prefix: str, fake_clock: FakeClock, raw: Any, value: bytes
) -> None:
    store = RedisStore(redis_url, prefix=redis_prefix, clock=fake_clock)
    key = obo_request().cache_key()
    raw.set(store.redis_key(key), value)
    assert store.get(key) is None
    assert raw.exists(store.redis_key(key)) == 0
    store.close()


def test_a_refresh_takes_another_replicas_fresher_token(replicas: list[TokenCache], fake_clock: FakeClock) -> None:
    a, b = replicas
    fetch = Fetcher(fake_clock, refresh_in=1800)
    a.get_or_fetch(obo_request(), fetch)
    b.get_or_fetch(obo_request(), never)
    fake_clock.advance(1800)
    refreshed = a.get_or_fetch(obo_request(), fetch)
    assert refreshed.token == "secret-token-2"
    assert b.get_or_fetch(obo_request(), never) == refreshed
    assert fetch.calls == 2
    assert (b.stats.refreshes, b.stats.l2_hits, b.stats.fetches) == (1, 2, 0)


def test_force_refresh_does_not_read_l2(replicas: list[TokenCache], fake_clock: FakeClock) -> None:
    a, b = replicas
    fetch = Fetcher(fake_clock)
    a.get_or_fetch(obo_request(), fetch)
    forced = b.get_or_fetch(obo_request(force_refresh=True), fetch)
    assert forced.token == "secret-token-2"
    assert a.get_or_fetch(obo_request(), never).token == "secret-token-1"  # a's L1
    a.clear()
    assert a.get_or_fetch(obo_request(), never) == forced  # L2 now holds the forced token


def test_from_config_uses_redis(redis_url: str, redis_prefix: str, fake_clock: FakeClock) -> None:
    config = EntraConfig(
        tenant_id=TENANT,
        client_id=CLIENT,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        cache_encryption_key=KEY,
    )
    a, b = TokenCache.from_config(config, fake_clock), TokenCache.from_config(config, fake_clock)
    token = a.get_or_fetch(obo_request(), Fetcher(fake_clock))
    assert b.get_or_fetch(obo_request(), never) == token
    a.close()
    b.close()


# -- outages ---------------------------------------------------------------------------------------------


def test_redis_killed_mid_test(
    redis_server: RedisServer, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(redis_server.url, prefix="outage:", clock=fake_clock, retry_interval=5)
    cache = TokenCache(clock=fake_clock, l2=store)
    fetch = Fetcher(fake_clock)
    first = cache.get_or_fetch(obo_request("user-1"), fetch)

    redis_server.stop()
    with caplog.at_level(logging.INFO, logger="entra_mw"):
        started = time.monotonic()
        assert cache.get_or_fetch(obo_request("user-1"), fetch) is first  # L1
        assert cache.get_or_fetch(obo_request("user-2"), fetch).token == "secret-token-2"
        assert cache.get_or_fetch(obo_request("user-3"), fetch).token == "secret-token-3"
        fake_clock.advance(10)  # Redis is tried again and still down: the same outage, no new warning
        assert cache.get_or_fetch(obo_request("user-4"), fetch).token == "secret-token-4"
        assert time.monotonic() - started < 3
    assert len(warnings_in(caplog)) == 1
    assert "unavailable" in warnings_in(caplog)[0].getMessage()
    assert "secret-token" not in caplog.text

    redis_server.start()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="entra_mw"):
        fake_clock.advance(10)
        cache.get_or_fetch(obo_request("user-5"), fetch)
        assert any("available again" in r.getMessage() for r in caplog.records)
        other = TokenCache(clock=fake_clock, l2=RedisStore(redis_server.url, prefix="outage:", clock=fake_clock))
        assert other.get_or_fetch(obo_request("user-5"), never).token == "secret-token-5"
        other.close()
    assert warnings_in(caplog) == []
    cache.close()


@pytest.mark.anyio
async def test_async_replicas(redis_url: str, redis_prefix: str, fake_clock: FakeClock, raw: Any) -> None:
    a, b = (
        TokenCache(
            clock=fake_clock, l2=RedisStore(redis_url, prefix=redis_prefix, encryption_key=KEY, clock=fake_clock)
        )
        for _ in range(2)
    )
    fetch = Fetcher(fake_clock)
    token = await a.aget_or_fetch(obo_request(), fetch.afetch)
    assert b"secret-token" not in raw.get(store_of(a).redis_key(obo_request().cache_key()))
    assert await b.aget_or_fetch(obo_request(), anever) == token
    assert (b.stats.l2_hits, fetch.calls) == (1, 1)
    # A garbage value read through the async client is a miss and is deleted.
    rkey = store_of(a).redis_key(obo_request("user-2").cache_key())
    raw.set(rkey, b"\x01garbage-garbage-garbage-garbage")
    assert await store_of(b).aget(obo_request("user-2").cache_key()) is None
    assert raw.exists(rkey) == 0
    await a.aclose()
    await b.aclose()


@pytest.mark.anyio
async def test_async_outage(redis_server: RedisServer, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    cache = TokenCache(clock=fake_clock, l2=RedisStore(redis_server.url, prefix="outage:", clock=fake_clock))
    fetch = Fetcher(fake_clock)
    first = await cache.aget_or_fetch(obo_request(), fetch.afetch)
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="entra_mw"):
        assert await cache.aget_or_fetch(obo_request(), fetch.afetch) is first
        assert (await cache.aget_or_fetch(obo_request("user-2"), fetch.afetch)).token == "secret-token-2"
        assert (await cache.aget_or_fetch(obo_request("user-3"), fetch.afetch)).token == "secret-token-3"
    assert len(warnings_in(caplog)) == 1
    await cache.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_uses_the_sync_client_off_the_loop(
    redis_url: str, redis_prefix: str, fake_clock: FakeClock, anyio_backend: str
) -> None:
    a, b = (
        TokenCache(
            clock=fake_clock, l2=RedisStore(redis_url, prefix=redis_prefix, encryption_key=KEY, clock=fake_clock)
        )
        for _ in range(2)
    )
    token = await a.aget_or_fetch(obo_request(), Fetcher(fake_clock).afetch)
    assert await b.aget_or_fetch(obo_request(), anever) == token
    await a.aclose()
    await b.aclose()


def test_each_event_loop_gets_its_own_async_client(redis_url: str, redis_prefix: str, fake_clock: FakeClock) -> None:
    import asyncio

    cache = TokenCache(clock=fake_clock, l2=RedisStore(redis_url, prefix=redis_prefix, clock=fake_clock))
    fetch = Fetcher(fake_clock)

    async def use() -> str:
        cache.clear()
        token = await cache.aget_or_fetch(obo_request(), fetch.afetch)
        await cache.aclose()
        return token.token

    assert asyncio.run(use()) == "secret-token-1"
    assert asyncio.run(use()) == "secret-token-1"  # from Redis, through a second loop's client
    assert fetch.calls == 1
