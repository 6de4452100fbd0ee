"""A cache hit through ``Downstream`` finds its token by key alone (no ``TokenRequest`` built): that key must be
the very ``TokenRequest.cache_key()`` the miss stored, for every flow, and must never reach another caller's,
agent's, tenant's or scope set's entry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from entra_mw import DownstreamApi, EntraAuth, EntraConfig, Principal
from entra_mw._acquisition._types import AccessToken, TokenRequest
from entra_mw._acquisition.cache import TokenCache
from entra_mw._downstream import Downstream
from entra_mw.credentials import ClientSecret
from entra_mw.testing import FakeClock

from ._recording import AGENT, CLIENT, OTHER_TENANT, TENANT, USER_OID, jwt

CALLER_TID = "33333333-4444-4555-8666-777777777777"
AGENT_USER_ID = "5e5e5e5e-1111-4222-8333-444444444444"
APIS = {
    "graph": DownstreamApi(base_url="https://graph.example/", scopes=("User.Read", "openid", "Mail.Read")),
    "weather": DownstreamApi(base_url="https://weather.example/", scopes=("api://weather/.default",)),
    "pinned": DownstreamApi(base_url="https://pinned.example/", scopes=("api://p/.default",), tenant=OTHER_TENANT),
}


class MintingCache(TokenCache):
    """A real token cache whose misses mint a distinct token (no Entra), recording each request."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.minted: list[TokenRequest] = []
        self.slow_calls = 0  # get_or_fetch calls: a hit found by key alone makes none
        self._now = clock.time

    def _mint(self, req: TokenRequest) -> AccessToken:
        self.minted.append(req)
        return AccessToken(token=f"minted-{len(self.minted)}", expires_on=self._now() + 3600)

    def get_or_fetch(self, req: TokenRequest, fetch: Callable[[TokenRequest], AccessToken]) -> AccessToken:
        self.slow_calls += 1
        return super().get_or_fetch(req, self._mint)

    async def aget_or_fetch(
        self, req: TokenRequest, afetch: Callable[[TokenRequest], Awaitable[AccessToken]]
    ) -> AccessToken:
        self.slow_calls += 1
        return self.get_or_fetch(req, self._mint)


@pytest.fixture
def cache(fake_clock: FakeClock) -> MintingCache:
    return MintingCache(fake_clock)


@pytest.fixture
def auth(cache: MintingCache, fake_clock: FakeClock) -> EntraAuth:
    config = EntraConfig(
        tenant_id=TENANT, client_id=CLIENT, credentials=(ClientSecret("s3cr3t"),), downstream_apis=APIS
    )
    return EntraAuth(config, token_cache=cache, clock=fake_clock)


def caller(oid: str = USER_OID, tid: str = CALLER_TID, n: int = 1) -> Principal:
    return Principal({"oid": oid, "sub": "s", "tid": tid, "scp": "access_as_user", "exp": 4e9, "uti": f"u{n}"})


def token(principal: Principal) -> str:
    return jwt(principal.claims)


TOKEN_1 = token(caller())
TOKEN_2 = token(caller(n=2))
TOKEN_OTHER_TENANT = token(caller(tid=OTHER_TENANT))


def views(auth: EntraAuth, token: str, principal: Principal) -> dict[str, Downstream]:
    user = auth.downstream(principal, token)
    return {
        "app": auth.downstream(),
        "obo": user,
        "agent_app": auth.downstream().for_agent(AGENT),
        "agent_obo": user.for_agent(AGENT),
        "agent_user_upn": user.for_agent(AGENT, username="Agent.User@Contoso.com"),
        "agent_user_oid": user.for_agent(AGENT, user_id=AGENT_USER_ID),
    }


def test_second_call_hits_for_every_flow(auth: EntraAuth, cache: MintingCache) -> None:
    first = {}
    for name, view in views(auth, TOKEN_1, caller()).items():
        for api in ("graph", "weather", "pinned"):
            if name in ("app", "agent_app") and api == "graph":
                continue  # app tokens need a '/.default' scope
            first[name, api] = view.authorization_header(api, app=name in ("app", "agent_app"))
    minted = len(cache.minted)
    assert minted == cache.slow_calls == len(first)
    hits = cache.stats.hits
    # A new Downstream per request, as the middleware builds: the key must not depend on the object.
    for name, view in views(auth, TOKEN_1, caller()).items():
        for (flow_name, api), header in first.items():
            if flow_name == name:
                assert view.authorization_header(api, app=name in ("app", "agent_app")) == header
    assert len(cache.minted) == minted
    assert cache.slow_calls == minted  # every second call was answered by its key alone
    assert cache.stats.hits == hits + len(first)
    # Same-view repeats (the memoised caller digest) hit as well.
    view = auth.downstream(caller(), TOKEN_1)
    assert view.authorization_header("graph") == view.authorization_header("graph") == first["obo", "graph"]
    assert cache.slow_calls == minted


def test_equivalent_scope_spellings_share_one_entry(auth: EntraAuth, cache: MintingCache) -> None:
    view = auth.downstream(caller(), TOKEN_1)
    header = view.authorization_header("graph")
    assert view.authorization_header("x", scopes=["mail.read", "user.read"]) == header
    assert view.authorization_header("x", scopes="Mail.Read User.Read offline_access") == header
    assert len(cache.minted) == 1


@pytest.mark.parametrize(
    ("token", "principal", "kwargs"),
    [
        (TOKEN_2, caller(n=2), {}),  # another caller token
        (TOKEN_OTHER_TENANT, caller(tid=OTHER_TENANT), {}),  # another tenant
        (TOKEN_1, caller(), {"scopes": ["User.Read"]}),  # another scope set
        (TOKEN_1, caller(), {"tenant": OTHER_TENANT}),  # a tenant override
        (TOKEN_1, caller(), {"app": False, "scopes": ["api://weather/.default"]}),  # OBO, not app
    ],
)
def test_hits_never_cross_callers_tenants_or_scopes(
    auth: EntraAuth, cache: MintingCache, token: str, principal: Principal, kwargs: dict[str, object]
) -> None:
    original = auth.downstream(caller(), TOKEN_1).authorization_header("graph")
    other = auth.downstream(principal, token).authorization_header("graph", **kwargs)  # type: ignore[arg-type]
    assert other != original
    assert len(cache.minted) == 2


def test_agents_and_agent_users_never_share(auth: EntraAuth, cache: MintingCache) -> None:
    user = auth.downstream(caller(), TOKEN_1)
    headers = {
        user.authorization_header("graph"),
        user.for_agent(AGENT).authorization_header("graph"),
        user.for_agent("a9e1a9e1-0000-4000-8000-000000000002").authorization_header("graph"),
        user.for_agent(AGENT, username="one@contoso.com").authorization_header("graph"),
        user.for_agent(AGENT, username="two@contoso.com").authorization_header("graph"),
        user.for_agent(AGENT, user_id=AGENT_USER_ID).authorization_header("graph"),
    }
    assert len(headers) == len(cache.minted) == 6


def test_claims_and_force_refresh_skip_the_hit(auth: EntraAuth, cache: MintingCache) -> None:
    view = auth.downstream(caller(), TOKEN_1)
    first = view.authorization_header("graph")
    assert view.authorization_header("graph", force_refresh=True) != first
    refreshed = view.authorization_header("graph")
    assert refreshed != first  # the forced fetch replaced the cached token
    assert view.authorization_header("graph", claims='{"access_token":{}}') != refreshed
    assert len(cache.minted) == 3


@pytest.mark.anyio
async def test_async_twin_hits_the_same_entry(auth: EntraAuth, cache: MintingCache) -> None:
    view = auth.downstream(caller(), TOKEN_1)
    header = view.authorization_header("graph")
    assert await auth.downstream(caller(), TOKEN_1).aauthorization_header("graph") == header
    assert len(cache.minted) == cache.slow_calls == 1
