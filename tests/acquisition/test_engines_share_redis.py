"""Two engines (two replicas of one app) sharing one Redis: a token one gets is served to the other."""

from __future__ import annotations

import logging

import pytest

from entra_mw import ClientSecret, DownstreamApi, EntraAuth, EntraConfig
from entra_mw.testing import FakeClock, FakeEntra
from tests._redis import RedisServer

pytestmark = pytest.mark.redis


def _config(fake: FakeEntra, redis_url: str, prefix: str, *, key: str | None = "k3y") -> EntraConfig:
    s = fake.quickstart()
    return EntraConfig(
        tenant_id=s.tenant.tenant_id,
        client_id=s.blueprint.app_id,
        credentials=[ClientSecret(s.blueprint_secret)],
        downstream_apis={
            "weather": DownstreamApi(
                base_url="https://weather.example/", scopes=(f"api://{s.api.app_id}/Weather.Read",)
            ),
            "weather-app": DownstreamApi(
                base_url="https://weather.example/", scopes=(f"api://{s.api.app_id}/.default",), request_app_token=True
            ),
        },
        redis_url=redis_url,
        redis_key_prefix=prefix,
        cache_encryption_key=key,
    )


def _engine(fake: FakeEntra, clock: FakeClock, config: EntraConfig) -> EntraAuth:
    return EntraAuth(config, transport=fake.transport, async_transport=fake.async_transport, clock=clock)


def test_two_replicas_share_tokens(
    fake_entra: FakeEntra, fake_clock: FakeClock, redis_url: str, redis_prefix: str
) -> None:
    s = fake_entra.quickstart()
    config = _config(fake_entra, redis_url, redis_prefix)
    tc = fake_entra.user_token(s.user, client=s.client, resource=s.blueprint, scopes=["access_agent"])
    with _engine(fake_entra, fake_clock, config) as one, _engine(fake_entra, fake_clock, config) as two:
        principal = one.validate(tc)
        fake_entra.reset_counts()
        first = one.downstream(principal, tc).authorization_header("weather")
        assert fake_entra.request_count("token") == 1
        second = two.downstream(two.validate(tc), tc).authorization_header("weather")
        assert second == first
        assert fake_entra.request_count("token") == 1  # the second replica found it in Redis

        app_one = one.downstream().for_agent(s.agent.app_id).authorization_header("weather-app")
        requests = fake_entra.request_count("token")
        assert two.downstream().for_agent(s.agent.app_id).authorization_header("weather-app") == app_one
        assert fake_entra.request_count("token") == requests


@pytest.mark.anyio
async def test_two_replicas_share_tokens_async(
    fake_entra: FakeEntra, fake_clock: FakeClock, redis_url: str, redis_prefix: str
) -> None:
    config = _config(fake_entra, redis_url, redis_prefix)
    async with _engine(fake_entra, fake_clock, config) as one, _engine(fake_entra, fake_clock, config) as two:
        fake_entra.reset_counts()
        first = await one.downstream().aauthorization_header("weather-app")
        assert await two.downstream().aauthorization_header("weather-app") == first
        assert fake_entra.request_count("token") == 1


def test_redis_down_still_works_with_one_warning(
    fake_entra: FakeEntra, fake_clock: FakeClock, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(fake_entra, redis_server.url, "entra_mw_test:down:", key=None)
    redis_server.stop()
    caplog.set_level(logging.WARNING, logger="entra_mw")
    with _engine(fake_entra, fake_clock, config) as auth:
        fake_entra.reset_counts()
        header = auth.downstream().authorization_header("weather-app")
        assert header.startswith("Bearer ")
        assert auth.downstream().authorization_header("weather-app") == header  # from L1
        assert fake_entra.request_count("token") == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert header[7:] not in caplog.text
