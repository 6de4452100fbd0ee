"""Sign-in sessions in Redis: shared by replicas, sealed with the engine's key, single-use pending sign-ins,
and an outage that never turns into a 500."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from entra_mw import ConfigurationError, EntraAuth, EntraConfig, RedisSessionStore, SignInError, WebSignIn
from entra_mw._signin import _session_key
from entra_mw.testing import FakeClock, FakeEntra
from tests._redis import RedisServer, private_redis

from .conftest import REDIRECT, make_site

pytestmark = [pytest.mark.redis]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with private_redis(tmp_path, missing="redis-server is not installed") as server:
        yield server


def test_two_replicas_share_sessions_and_values_are_sealed(
    fake_entra: FakeEntra, fake_clock: FakeClock, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    key = "0123456789abcdef0123456789abcdef"
    one = RedisSessionStore(redis_server.url, encryption_key=key)
    two = RedisSessionStore(redis_server.url, encryption_key=key)
    replica_one = make_site(fake_entra, fake_clock, store=one)
    replica_two = WebSignIn(replica_one.auth, scopes=replica_one.signin.scopes, store=two)
    start = replica_one.signin.start(redirect_uri=REDIRECT)
    done = replica_two.finish(start.pending_id, replica_one.sign_in(start.url))  # the callback hit another replica
    assert replica_one.signin.user(done.session_id).oid == replica_one.s.user.object_id
    token = replica_one.signin.access_token(done.session_id, scopes=[replica_one.api_scope])
    import redis

    client = redis.Redis.from_url(redis_server.url)
    raw = client.get("entra_mw:signin:" + _session_key(done.session_id))
    assert isinstance(raw, bytes) and raw.startswith(b"\x01") and token.encode() not in raw and b"refresh" not in raw
    assert not any(done.session_id in str(k) for k in client.keys("*"))
    # A value moved to another session's key does not open.
    client.set("entra_mw:signin:" + _session_key("another-session"), raw)
    assert not replica_one.signin.user("another-session")
    # With the wrong key, nothing opens; unsealed values are refused when a key is set.
    assert not WebSignIn(replica_one.auth, store=RedisSessionStore(redis_server.url, encryption_key="x" * 32)).user(
        done.session_id
    )
    client.set("entra_mw:signin:" + _session_key("planted"), b'{"claims": {"oid": "x"}}')
    assert not replica_one.signin.user("planted")
    client.close()
    one.close()
    two.close()
    replica_one.auth.close()


def test_pending_sign_in_is_taken_once_across_replicas(
    fake_entra: FakeEntra, fake_clock: FakeClock, redis_server: RedisServer
) -> None:
    site = make_site(fake_entra, fake_clock, store=RedisSessionStore(redis_server.url, encryption_key="k" * 32))
    other = WebSignIn(
        site.auth, scopes=site.signin.scopes, store=RedisSessionStore(redis_server.url, encryption_key="k" * 32)
    )
    start = site.signin.start(redirect_uri=REDIRECT)
    params = site.sign_in(start.url)
    site.signin.finish(start.pending_id, params)
    with pytest.raises(SignInError) as info:
        other.finish(start.pending_id, params)
    assert info.value.reason == "no_pending"
    site.auth.close()


def test_outage_is_signed_out_or_503_never_500(
    fake_entra: FakeEntra, fake_clock: FakeClock, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisSessionStore(redis_server.url, encryption_key="k" * 32)
    site = make_site(fake_entra, fake_clock, store=store)
    start = site.signin.start(redirect_uri=REDIRECT)
    params = site.sign_in(start.url)
    redis_server.stop()
    assert not site.signin.user("whatever")
    with pytest.raises(SignInError) as info:
        site.signin.start(redirect_uri=REDIRECT)
    assert info.value.status_code == 503
    with pytest.raises(SignInError):
        site.signin.finish(start.pending_id, params)
    assert sum("unavailable" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 1
    redis_server.start()
    start = site.signin.start(redirect_uri=REDIRECT)
    assert site.signin.finish(start.pending_id, site.sign_in(start.url)).user
    store.close()
    site.auth.close()


def test_unencrypted_store_warns(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisSessionStore(redis_server.url)
    assert not store.encrypted and "not encrypted" in caplog.text
    store.close()


def test_from_config_and_bad_urls() -> None:
    config = EntraConfig(
        tenant_id="contoso.onmicrosoft.com",
        client_id="11111111-2222-3333-4444-555555555555",
        redis_url="redis://127.0.0.1:1/0",
        redis_key_prefix="app1:",
        cache_encryption_key="k" * 32,
    )
    store = RedisSessionStore.from_config(config)
    assert store.encrypted and "app1:signin:" in repr(store)
    with pytest.raises(ConfigurationError, match="redis_url"):
        RedisSessionStore("http://cache:6379")
    with pytest.raises(ConfigurationError, match="redis_url"):
        RedisSessionStore.from_config(
            EntraConfig(tenant_id="contoso.onmicrosoft.com", client_id="11111111-2222-3333-4444-555555555555")
        )
    with EntraAuth(config) as auth:
        assert WebSignIn(auth, store=store).store is store
