"""TokenCache: L1 lifetimes, proactive refresh, stale-on-failure, bounds, configuration, the canonical key."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entra_mw import EntraConfig
from entra_mw._acquisition._redis import RedisStore
from entra_mw._acquisition._types import TokenRequest
from entra_mw._acquisition.cache import CacheStats, TokenCache
from entra_mw.errors import ConfigurationError, ProviderUnavailable, TokenAcquisitionError
from entra_mw.testing import FakeClock

from ._tokens import CLIENT, TENANT, Fetcher, app_request, obo_request


def entra_down() -> TokenAcquisitionError:
    return TokenAcquisitionError("Entra could not be reached", correlation_id="corr-1")


# -- hits, misses, lifetime ---------------------------------------------------------------------------------


def test_miss_then_hit(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock)
    first = cache.get_or_fetch(app_request(), fetch)
    second = cache.get_or_fetch(app_request(), fetch)
    assert first is second
    assert fetch.calls == 1
    assert len(cache) == 1
    assert cache.stats == CacheStats(hits=1, misses=1, l2_hits=0, fetches=1, refreshes=0, stale_served=0, errors=0)


def test_keys_are_separate(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock)
    a = cache.get_or_fetch(obo_request("user-a-token"), fetch)
    b = cache.get_or_fetch(obo_request("user-b-token"), fetch)
    c = cache.get_or_fetch(app_request(), fetch)
    assert len({a.token, b.token, c.token}) == 3
    assert cache.get_or_fetch(obo_request("user-a-token"), fetch) is a
    assert fetch.calls == 3


def test_served_until_refresh_margin_before_expiry(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock, refresh_margin=300)
    fetch = Fetcher(fake_clock, lifetime=3600)
    first = cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(3600 - 300 - 1)
    assert cache.get_or_fetch(app_request(), fetch) is first
    fake_clock.advance(1)
    second = cache.get_or_fetch(app_request(), fetch)
    assert second is not first
    assert fetch.calls == 2


def test_short_lived_token_is_cached_for_half_its_life(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock, refresh_margin=300)
    fetch = Fetcher(fake_clock, lifetime=120)
    first = cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(59)
    assert cache.get_or_fetch(app_request(), fetch) is first
    fake_clock.advance(1)
    assert cache.get_or_fetch(app_request(), fetch) is not first
    assert fetch.calls == 2


def test_already_expired_token_is_returned_but_not_cached(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock, lifetime=0)
    assert cache.get_or_fetch(app_request(), fetch).token == "secret-token-1"
    assert cache.get_or_fetch(app_request(), fetch).token == "secret-token-2"
    assert len(cache) == 0


def test_expired_entries_leave_lazily(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock)
    cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(4000)
    assert len(cache) == 1
    fetch.error = entra_down()
    with pytest.raises(TokenAcquisitionError):
        cache.get_or_fetch(app_request(), fetch)
    assert len(cache) == 0


def test_force_refresh_skips_reads_and_replaces_the_entry(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock)
    first = cache.get_or_fetch(app_request(), fetch)
    forced = cache.get_or_fetch(app_request(force_refresh=True), fetch)
    assert forced is not first
    assert cache.get_or_fetch(app_request(), fetch) is forced
    assert fetch.calls == 2


# -- errors -------------------------------------------------------------------------------------------------


def test_errors_propagate_and_are_not_cached(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock)
    fetch.error = entra_down()
    with pytest.raises(TokenAcquisitionError):
        cache.get_or_fetch(app_request(), fetch)
    fetch.error = None
    assert cache.get_or_fetch(app_request(), fetch).token == "secret-token-2"
    assert cache.stats.errors == 1
    assert cache.in_flight == 0


def test_unexpected_exceptions_are_not_swallowed(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock)
    fetch.error = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        cache.get_or_fetch(app_request(), fetch)
    assert cache.in_flight == 0


# -- proactive refresh --------------------------------------------------------------------------------------


def test_refresh_after_refresh_on(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock, lifetime=3600, refresh_in=1800)
    first = cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(1799)
    assert cache.get_or_fetch(app_request(), fetch) is first
    fake_clock.advance(1)
    refreshed = cache.get_or_fetch(app_request(), fetch)
    assert refreshed is not first
    assert cache.get_or_fetch(app_request(), fetch) is refreshed
    assert fetch.calls == 2
    assert cache.stats.refreshes == 1


@pytest.mark.parametrize("error", [entra_down(), ProviderUnavailable("no keys", reason="jwks_down")])
def test_failed_refresh_serves_the_still_valid_token(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    cache = TokenCache(clock=fake_clock, refresh_retry=30)
    fetch = Fetcher(fake_clock, lifetime=3600, refresh_in=1800)
    first = cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(1800)
    fetch.error = error
    with caplog.at_level(logging.WARNING, logger="entra_mw"):
        assert cache.get_or_fetch(app_request(), fetch) is first
        # Within the retry pause nobody asks Entra again.
        assert cache.get_or_fetch(app_request(), fetch) is first
    assert fetch.calls == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "secret-token" not in caplog.text
    assert "refresh failed" in warnings[0].getMessage()
    stats = cache.stats
    assert (stats.refreshes, stats.errors, stats.stale_served) == (1, 1, 2)

    fake_clock.advance(30)
    fetch.error = None
    refreshed = cache.get_or_fetch(app_request(), fetch)
    assert refreshed.token == "secret-token-3"
    assert fetch.calls == 3


@pytest.mark.parametrize("refresh_in", [None, 1800])
def test_inside_the_margin_a_failed_refresh_serves_the_valid_token(
    fake_clock: FakeClock, refresh_in: float | None
) -> None:
    # The margin means "refresh due", not "unusable": while Entra is down the still-valid token is served, to
    # the caller that tried too; past exp it never is.
    cache = TokenCache(clock=fake_clock, refresh_margin=300)
    fetch = Fetcher(fake_clock, lifetime=3600, refresh_in=refresh_in)
    first = cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(3400)  # inside the margin (and past refresh_in)
    fetch.error = entra_down()
    assert cache.get_or_fetch(app_request(), fetch) is first  # the refreshing caller
    assert cache.get_or_fetch(app_request(), fetch) is first  # everyone else, without asking Entra
    assert fetch.calls == 2
    fake_clock.advance(199)  # 1 s before exp
    assert cache.get_or_fetch(app_request(), fetch) is first
    fake_clock.advance(1)  # at exp: never served
    with pytest.raises(TokenAcquisitionError):
        cache.get_or_fetch(app_request(), fetch)
    assert cache.peek(app_request().l1_key()) is None


def test_inside_the_margin_one_caller_refreshes(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock, refresh_margin=300)
    fetch = Fetcher(fake_clock, lifetime=3600)
    first = cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(3299)
    assert cache.peek(app_request().l1_key()) is not None  # fresh: a plain hit
    fake_clock.advance(2)
    assert cache.peek(app_request().l1_key()) is None  # due: goes through the flow
    second = cache.get_or_fetch(app_request(), fetch)
    assert second is not first and second.token == "secret-token-2"
    assert (cache.stats.refreshes, fetch.calls) == (1, 2)


def test_refresh_bug_is_not_hidden(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock, lifetime=3600, refresh_in=1800)
    cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(1800)
    fetch.error = KeyError("a bug")
    with pytest.raises(KeyError):
        cache.get_or_fetch(app_request(), fetch)


def test_refresh_on_after_usable_window_is_ignored(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock, lifetime=3600, refresh_in=3500)
    first = cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(3299)
    assert cache.get_or_fetch(app_request(), fetch) is first
    assert cache.stats.refreshes == 0


# -- bounds and housekeeping --------------------------------------------------------------------------------


def test_lru_bound(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock, max_entries=3)
    fetch = Fetcher(fake_clock)
    reqs = [obo_request(f"user-{i}") for i in range(4)]
    for req in reqs[:3]:
        cache.get_or_fetch(req, fetch)
    cache.get_or_fetch(reqs[0], fetch)  # 0 is now the most recently used; 1 the least
    cache.get_or_fetch(reqs[3], fetch)
    assert len(cache) == 3
    assert fetch.calls == 4
    cache.get_or_fetch(reqs[0], fetch)
    cache.get_or_fetch(reqs[2], fetch)
    assert fetch.calls == 4
    cache.get_or_fetch(reqs[1], fetch)
    assert fetch.calls == 5


def test_clear(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock)
    cache.get_or_fetch(app_request(), fetch)
    cache.clear()
    assert len(cache) == 0
    cache.get_or_fetch(app_request(), fetch)
    assert fetch.calls == 2


def test_repr_names_no_token(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    token = cache.get_or_fetch(app_request(), Fetcher(fake_clock))
    assert "secret-token" not in repr(cache)
    assert "secret-token" not in repr(token)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"max_entries": 0}, "token_cache_size"), ({"refresh_margin": -1}, "token_refresh_margin")],
)
def test_bad_settings(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenCache(**kwargs)  # type: ignore[arg-type]
    assert info.value.key == key


def test_from_config_without_redis(fake_clock: FakeClock) -> None:
    config = EntraConfig(tenant_id=TENANT, client_id=CLIENT, token_cache_size=7, token_refresh_margin=60)
    cache = TokenCache.from_config(config, fake_clock)
    assert cache.l2 is None
    fetch = Fetcher(fake_clock, lifetime=3600)
    first = cache.get_or_fetch(app_request(), fetch)
    fake_clock.advance(3600 - 61)
    assert cache.get_or_fetch(app_request(), fetch) is first
    cache.close()


def test_from_config_with_redis_does_not_connect(fake_clock: FakeClock) -> None:
    # Port 1 is closed: building the cache must not touch it.
    config = EntraConfig(
        tenant_id=TENANT,
        client_id=CLIENT,
        redis_url="redis://127.0.0.1:1/0",
        redis_key_prefix="app1:",
        cache_encryption_key="k" * 32,
    )
    cache = TokenCache.from_config(config, fake_clock)
    assert isinstance(cache.l2, RedisStore)
    assert cache.l2.encrypted
    assert cache.l2.redis_key("x").startswith("app1:at:")
    assert "k" * 32 not in repr(cache.l2)
    cache.close()


def test_from_env_redis_settings(fake_clock: FakeClock) -> None:
    config = EntraConfig.from_env(
        {
            "AzureAd__TenantId": TENANT,
            "AzureAd__ClientId": CLIENT,
            "TokenCache__RedisConnection": "127.0.0.1:1,password=pw",
            "ENTRA_MW_CACHE_ENCRYPTION_KEY": "a-secret-of-some-length",
        }
    )
    cache = TokenCache.from_config(config, fake_clock)
    assert isinstance(cache.l2, RedisStore)
    assert cache.l2.encrypted
    assert "pw" not in repr(cache.l2)
    cache.close()


def test_redis_down_is_a_miss_with_one_warning(fake_clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 1: every Redis call fails at once, the cache keeps working from L1 and fetch.
    store = RedisStore("redis://127.0.0.1:1/0", clock=fake_clock, retry_interval=5)
    cache = TokenCache(clock=fake_clock, l2=store)
    fetch = Fetcher(fake_clock)
    with caplog.at_level(logging.INFO, logger="entra_mw"):
        first = cache.get_or_fetch(app_request(), fetch)
        assert cache.get_or_fetch(app_request(), fetch) is first
        cache.get_or_fetch(obo_request("user-a"), fetch)
        fake_clock.advance(10)  # Redis is tried again, fails again: still the same outage
        cache.get_or_fetch(obo_request("user-b"), fetch)
    assert fetch.calls == 3
    warnings = [
        r
        for r in caplog.records
        if r.name.startswith("entra_mw") and r.levelno == logging.WARNING and "plaintext" not in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "127.0.0.1:1" in warnings[0].getMessage()
    cache.close()


def test_redis_store_rejects_bad_urls() -> None:
    with pytest.raises(ConfigurationError):
        RedisStore("http://cache:6379")


# -- async ---------------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_async_miss_hit_refresh(fake_clock: FakeClock, anyio_backend: str) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock, lifetime=3600, refresh_in=1800)
    first = await cache.aget_or_fetch(app_request(), fetch.afetch)
    assert await cache.aget_or_fetch(app_request(), fetch.afetch) is first
    fake_clock.advance(1800)
    fetch.error = entra_down()
    assert await cache.aget_or_fetch(app_request(), fetch.afetch) is first
    fake_clock.advance(30)
    fetch.error = None
    assert (await cache.aget_or_fetch(app_request(), fetch.afetch)).token == "secret-token-3"
    fake_clock.advance(4000)
    fetch.error = entra_down()
    with pytest.raises(TokenAcquisitionError):
        await cache.aget_or_fetch(app_request(), fetch.afetch)
    assert cache.in_flight == 0
    await cache.aclose()


@pytest.mark.anyio
async def test_async_force_refresh(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock)
    first = await cache.aget_or_fetch(app_request(), fetch.afetch)
    forced = await cache.aget_or_fetch(app_request(force_refresh=True), fetch.afetch)
    assert forced is not first
    assert await cache.aget_or_fetch(app_request(), fetch.afetch) is forced


# -- the canonical key -------------------------------------------------------------------------------------


def test_cache_key_is_memoised_and_excludes_force_refresh() -> None:
    req = obo_request("a-caller-token")
    key = req.cache_key()
    assert req.cache_key() is key
    assert dataclasses.replace(req, force_refresh=True).cache_key() == key
    assert "a-caller-token" not in key
    assert "a-caller-token" not in repr(req)


def test_cache_key_normalises_case_and_scope_order() -> None:
    a = TokenRequest(flow="app", scopes=("A", "b"), client_id=CLIENT.upper(), tenant=TENANT.upper())
    b = TokenRequest(flow="app", scopes=("B", "a", "a"), client_id=CLIENT, tenant=TENANT)
    assert a.cache_key() == b.cache_key()


@pytest.mark.parametrize(
    "change",
    [
        {"flow": "agent_obo"},
        {"tenant": "other-tenant"},
        {"client_id": "other-client"},
        {"agent_id": "agent-1"},
        {"user_assertion": "token-b"},
        {"username": "alice@contoso.com"},
        {"user_object_id": "oid-1"},
        {"scopes": ("api://downstream/write",)},
        {"claims": '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'},
    ],
)
def test_cache_key_separates(change: dict[str, object]) -> None:
    base = obo_request("token-a")
    assert dataclasses.replace(base, **change).cache_key() != base.cache_key()  # type: ignore[arg-type]


def test_cache_key_separator_cannot_shift_fields() -> None:
    a = TokenRequest(flow="agent_user", scopes=("s",), client_id="c", tenant="t", agent_id="x", username="u\x1fs")
    b = TokenRequest(flow="agent_user", scopes=("u\x1fs",), client_id="c", tenant="t", agent_id="x", username="u")
    assert a.cache_key() != b.cache_key()
    assert a.cache_key().startswith("[")


def _scope_string(scopes: list[str]) -> str:
    # What Entra receives: the space-delimited scope set (RFC 6749 §3.3), so ("a b",) and ("a", "b") are one.
    if len(scopes) == 1:
        return scopes[0].lower()
    return " ".join(sorted({s.lower() for s in scopes}))


_text = st.text(alphabet=st.sampled_from("aB\x1f :/"), max_size=4)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["app", "obo", "agent_user"]),
            _text,
            _text,
            st.one_of(st.none(), _text),
            st.one_of(st.none(), _text),
            st.lists(_text, min_size=1, max_size=3),
            st.one_of(st.none(), _text),
        ),
        min_size=2,
        max_size=2,
    )
)
def test_cache_key_equal_only_for_equal_canonical_parts(pairs: list[tuple[object, ...]]) -> None:
    def canonical(p: tuple[object, ...]) -> tuple[object, ...]:
        flow, tenant, client, agent, user, scopes, claims = p
        return (
            flow,
            str(tenant).lower(),
            str(client).lower(),
            (agent or "").lower(),  # type: ignore[attr-defined]
            None if user is None else str(user).lower(),
            _scope_string(scopes),  # type: ignore[arg-type]
            claims or "",
        )

    def build(p: tuple[object, ...]) -> TokenRequest:
        flow, tenant, client, agent, user, scopes, claims = p
        return TokenRequest(
            flow=flow,  # type: ignore[arg-type]
            tenant=tenant,  # type: ignore[arg-type]
            client_id=client,  # type: ignore[arg-type]
            agent_id=agent,  # type: ignore[arg-type]
            username=user,  # type: ignore[arg-type]
            scopes=tuple(scopes),  # type: ignore[arg-type]
            claims=claims,  # type: ignore[arg-type]
        )

    a, b = pairs
    if build(a).cache_key() == build(b).cache_key():
        assert canonical(a) == canonical(b)
