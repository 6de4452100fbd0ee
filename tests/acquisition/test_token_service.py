"""The engine's token service: what a ``Downstream`` holds instead of the engine. Its source is pluggable (a view
with another source shares the cache and the plan memo), and the engine's parts are private."""

from __future__ import annotations

import pytest

from entra_mw import DownstreamApi, EntraAuth, EntraConfig
from entra_mw._acquisition._types import AccessToken, TokenRequest
from entra_mw._downstream import Downstream
from entra_mw._tokens import TokenService
from entra_mw.credentials import ClientSecret
from entra_mw.testing import FakeClock

from ._recording import CLIENT, TENANT

APIS = {"weather": DownstreamApi(base_url="https://weather.example/", scopes=("api://weather/.default",))}


class CountingSource:
    """A token source that mints a distinct token per request (a signed-in session's tokens, say)."""

    def __init__(self, clock: FakeClock, name: str) -> None:
        self.requests: list[TokenRequest] = []
        self._clock = clock
        self._name = name

    def fetch(self, req: TokenRequest) -> AccessToken:
        self.requests.append(req)
        return AccessToken(token=f"{self._name}-{len(self.requests)}", expires_on=self._clock.time() + 3600)

    async def afetch(self, req: TokenRequest) -> AccessToken:
        return self.fetch(req)


@pytest.fixture
def auth(fake_clock: FakeClock) -> EntraAuth:
    config = EntraConfig(
        tenant_id=TENANT, client_id=CLIENT, credentials=(ClientSecret("s3cr3t"),), downstream_apis=APIS
    )
    return EntraAuth(config, clock=fake_clock)


def test_a_downstream_holds_the_token_service_not_the_engine(auth: EntraAuth) -> None:
    downstream = auth.downstream()
    assert isinstance(downstream._tokens, TokenService)
    assert not any(isinstance(getattr(downstream, slot, None), EntraAuth) for slot in Downstream.__slots__)


def test_the_engine_parts_are_private(auth: EntraAuth) -> None:
    for name in ("http", "validator", "acquirer"):
        assert not hasattr(auth, name), name
    # Kept public on purpose: sharing one cache between engines (docs/caching.md).
    assert auth.token_cache is auth._tokens.cache
    other = EntraAuth(auth.config, token_cache=auth.token_cache)
    assert other.token_cache is auth.token_cache


def test_a_view_with_another_source_shares_the_cache_and_plans(auth: EntraAuth, fake_clock: FakeClock) -> None:
    source = CountingSource(fake_clock, "session")
    tokens = auth._tokens.with_source(source)
    assert tokens.cache is auth.token_cache and tokens.plans is auth._tokens.plans
    view = Downstream(tokens)
    header = view.authorization_header("weather", app=True)
    assert header == "Bearer session-1"
    assert len(source.requests) == 1
    # The token is cached: the engine's own Downstream finds it by key (no acquirer is built, no MSAL).
    assert auth.downstream().authorization_header("weather", app=True) == header
    assert auth._tokens._shared.acquirer is None
    assert Downstream(tokens).authorization_header("weather", app=True) == header
    assert len(source.requests) == 1


@pytest.mark.anyio
async def test_the_async_path_asks_the_source_too(auth: EntraAuth, fake_clock: FakeClock) -> None:
    source = CountingSource(fake_clock, "async")
    view = Downstream(auth._tokens.with_source(source))
    assert await view.aauthorization_header("weather", app=True) == "Bearer async-1"
    assert await view.aauthorization_header("weather", app=True, force_refresh=True) == "Bearer async-2"
    assert [r.force_refresh for r in source.requests] == [False, True]
