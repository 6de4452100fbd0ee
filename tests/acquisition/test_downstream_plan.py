"""Which token ``Downstream`` asks for (spec §1.4, §3.9): flow, scopes, tenant, agent arguments. The token
cache records the ``TokenRequest``; the flows themselves run end to end in ``test_downstream_flows.py``."""

from __future__ import annotations

import pytest

from entra_mw import ConfigurationError, DownstreamApi, EntraAuth, Principal
from entra_mw._acquisition._types import TokenRequest
from entra_mw._downstream import DownstreamRequestError

from ._recording import AGENT, CLIENT, OTHER_TENANT, TENANT, USER_OID, RecordingCache, jwt, make_auth

CALLER_TID = "33333333-4444-4555-8666-777777777777"
APIS = {
    "graph": DownstreamApi(base_url="https://graph.microsoft.com/v1.0/", scopes=("User.Read", "Mail.Read")),
    "weather": DownstreamApi(base_url="https://weather.example/", scopes=("api://weather/.default",)),
    "apponly": DownstreamApi(
        base_url="https://apponly.example/",
        scopes=("api://apponly/.default", "ignored"),
        request_app_token=True,
    ),
    "pinned": DownstreamApi(base_url="https://pinned.example/", scopes=("api://p/.default",), tenant=OTHER_TENANT),
    "noscopes": DownstreamApi(base_url="https://none.example/"),
}


def caller(tid: str | None = CALLER_TID) -> Principal:
    claims = {"oid": USER_OID, "sub": "s", "scp": "access_as_user", "azp": "client", "exp": 4_000_000_000}
    if tid is not None:
        claims["tid"] = tid
    return Principal(claims)


def token_of(principal: Principal) -> str:
    return jwt(principal.claims)


USER_TOKEN = token_of(caller())


def last(cache: RecordingCache) -> TokenRequest:
    return cache.requests[-1]


@pytest.fixture
def cache() -> RecordingCache:
    return RecordingCache()


@pytest.fixture
def auth(cache: RecordingCache) -> EntraAuth:
    return make_auth(APIS, cache)


def test_no_caller_is_refused_unless_an_app_token_is_asked_for(auth: EntraAuth, cache: RecordingCache) -> None:
    # Spec §1.4: without a caller a delegated API is a 401, never an app token in the user's place.
    for view in (auth.downstream(), auth.downstream(caller())):
        for api, kwargs in (("weather", {}), ("graph", {}), ("x", {"scopes": ["User.Read"]})):
            with pytest.raises(DownstreamRequestError) as info:
                view.authorization_header(api, **kwargs)  # type: ignore[arg-type]
            assert info.value.status_code == 401
            assert info.value.reason == "no_caller"
            assert info.value.www_authenticate is not None
            assert info.value.www_authenticate.startswith("Bearer error=")
            assert dict(info.value.headers())["WWW-Authenticate"] == info.value.www_authenticate
        with pytest.raises(DownstreamRequestError, match="no caller token"):
            view.call("weather")
        with pytest.raises(DownstreamRequestError, match="no caller token"):
            view.for_agent(AGENT).authorization_header("weather")
    assert cache.requests == []


def test_no_caller_means_app_token_with_first_scope(auth: EntraAuth, cache: RecordingCache) -> None:
    header = auth.downstream().authorization_header("weather", app=True)
    assert header == "Bearer downstream-token-1"
    req = last(cache)
    assert req.flow == "app"
    assert req.scopes == ("api://weather/.default",)
    assert req.tenant == TENANT
    assert req.client_id == CLIENT
    assert req.user_assertion is None
    assert req.agent_id is None


def test_caller_token_means_obo_in_the_callers_tenant(auth: EntraAuth, cache: RecordingCache) -> None:
    auth.downstream(caller(), USER_TOKEN).authorization_header("graph")
    req = last(cache)
    assert req.flow == "obo"
    assert req.user_assertion == USER_TOKEN
    assert req.scopes == ("Mail.Read", "User.Read")
    assert req.tenant == CALLER_TID


def test_obo_without_tid_uses_the_configured_tenant(auth: EntraAuth, cache: RecordingCache) -> None:
    auth.downstream(caller(tid=None), token_of(caller(tid=None))).authorization_header("graph")
    assert last(cache).tenant == TENANT
    auth.downstream(None, "user-token").authorization_header("graph")
    assert last(cache).tenant == TENANT


def test_app_flag_and_request_app_token_force_the_app_path(auth: EntraAuth, cache: RecordingCache) -> None:
    downstream = auth.downstream(caller(), USER_TOKEN)
    downstream.authorization_header("weather", app=True)
    assert last(cache).flow == "app"
    assert last(cache).user_assertion is None
    assert last(cache).tenant == TENANT
    downstream.authorization_header("apponly")
    assert last(cache).flow == "app"
    assert last(cache).scopes == ("api://apponly/.default",)


def test_tenant_precedence(auth: EntraAuth, cache: RecordingCache) -> None:
    downstream = auth.downstream(caller(), USER_TOKEN)
    downstream.authorization_header("pinned", scopes=["User.Read"])
    assert last(cache).tenant == OTHER_TENANT
    downstream.authorization_header("pinned", scopes=["User.Read"], tenant="contoso.onmicrosoft.com")
    assert last(cache).tenant == "contoso.onmicrosoft.com"
    downstream.authorization_header("weather", app=True, tenant=OTHER_TENANT)
    assert last(cache).tenant == OTHER_TENANT


@pytest.mark.parametrize("tenant", ["common", "organizations", "Organizations", "consumers"])
def test_meta_tenant_override_is_refused(auth: EntraAuth, tenant: str) -> None:
    with pytest.raises(DownstreamRequestError, match="IDW10405"):
        auth.downstream().authorization_header("weather", tenant=tenant, app=True)


@pytest.mark.parametrize("tenant", ["../evil", "a b", "", "x" * 300, "evil.example/path", 42])
def test_malformed_tenant_override_is_refused(auth: EntraAuth, tenant: object) -> None:
    with pytest.raises(DownstreamRequestError):
        auth.downstream().authorization_header("weather", tenant=tenant, app=True)  # type: ignore[arg-type]


def test_multi_tenant_app_needs_a_real_tenant_for_app_tokens(cache: RecordingCache) -> None:
    auth = make_auth(APIS, cache, tenant_id="organizations")
    with pytest.raises(ConfigurationError, match="meta-tenant") as configured:
        auth.downstream().authorization_header("weather", app=True)
    assert configured.value.key == "tenant_id"  # the configuration cannot work: named, not blamed on the caller
    # OBO runs in the caller's tenant, which is fine.
    auth.downstream(caller(), USER_TOKEN).authorization_header("graph")
    assert last(cache).tenant == CALLER_TID
    auth.downstream().authorization_header("weather", tenant=OTHER_TENANT, app=True)
    assert last(cache).tenant == OTHER_TENANT


def test_scopes_argument_replaces_configured_scopes(auth: EntraAuth, cache: RecordingCache) -> None:
    auth.downstream(caller(), USER_TOKEN).authorization_header("graph", scopes="Files.Read openid profile")
    assert last(cache).scopes == ("Files.Read",)
    auth.downstream().authorization_header("unconfigured", scopes=["api://x/.default"], app=True)
    assert last(cache).scopes == ("api://x/.default",)


def test_missing_scopes_are_a_clear_error(auth: EntraAuth, cache: RecordingCache) -> None:
    with pytest.raises(DownstreamRequestError, match="No scopes found for the API 'unknown'") as info:
        auth.downstream().authorization_header("unknown")
    assert info.value.status_code == 400
    with pytest.raises(DownstreamRequestError, match="No scopes found for the API 'noscopes'"):
        auth.downstream().authorization_header("noscopes")
    with pytest.raises(DownstreamRequestError, match="No scopes found"):
        auth.downstream(caller(), USER_TOKEN).authorization_header("graph", scopes=["openid", "offline_access"])
    assert cache.requests == []


def test_app_scope_must_end_in_default(auth: EntraAuth) -> None:
    # Configured scopes that can never give an app token: the operator's mistake (the sidecar's 500) ...
    with pytest.raises(ConfigurationError, match="IDW10404") as configured:
        auth.downstream().authorization_header("graph", app=True)
    assert configured.value.key == "DownstreamApis__graph__Scopes"
    # ... while scopes= of the request are the caller's input: 400.
    with pytest.raises(DownstreamRequestError, match="IDW10404") as info:
        auth.downstream().authorization_header("graph", scopes=["User.Read"], app=True)
    assert info.value.status_code == 400
    with pytest.raises(ConfigurationError, match=r"/\.default"):
        auth.downstream(caller(), USER_TOKEN).authorization_header("graph", app=True)


def test_claims_and_force_refresh_are_passed_on(auth: EntraAuth, cache: RecordingCache) -> None:
    auth.downstream().authorization_header("weather", force_refresh=True, app=True)
    assert last(cache).force_refresh
    assert last(cache).claims is None
    auth.downstream().authorization_header("weather", claims='{"access_token":{}}', app=True)
    assert last(cache).claims == '{"access_token":{}}'
    assert last(cache).force_refresh
    with pytest.raises(DownstreamRequestError):
        auth.downstream().authorization_header("weather", claims=" ", app=True)


# -- agents ------------------------------------------------------------------------------------------------


def test_agent_without_caller_is_autonomous_when_asked(auth: EntraAuth, cache: RecordingCache) -> None:
    agent = auth.downstream().for_agent(AGENT)
    agent.authorization_header("weather", app=True)
    req = last(cache)
    assert req.flow == "agent_app"
    assert req.agent_id == AGENT
    assert req.client_id == CLIENT
    assert req.scopes == ("api://weather/.default",)
    assert req.user_assertion is None


def test_agent_with_caller_is_agent_obo(auth: EntraAuth, cache: RecordingCache) -> None:
    agent = auth.downstream(caller(), USER_TOKEN).for_agent(AGENT.upper())
    assert agent.agent_id == AGENT
    assert agent.principal is not None
    agent.authorization_header("graph")
    req = last(cache)
    assert req.flow == "agent_obo"
    assert req.user_assertion == USER_TOKEN
    assert req.tenant == CALLER_TID
    agent.authorization_header("weather", app=True)
    assert last(cache).flow == "agent_app"
    assert last(cache).user_assertion is None


def test_agent_user_by_username_and_by_id(auth: EntraAuth, cache: RecordingCache) -> None:
    auth.downstream().for_agent(AGENT, username="agent.user@contoso.com").authorization_header("graph")
    req = last(cache)
    assert req.flow == "agent_user"
    assert req.username == "agent.user@contoso.com"
    assert req.user_object_id is None
    assert req.user_assertion is None
    assert req.tenant == TENANT
    # A caller token does not turn the agent-user leg into OBO (spec §1.4: it runs before OBO).
    auth.downstream(caller(), USER_TOKEN).for_agent(AGENT, user_id=USER_OID.upper()).authorization_header("graph")
    req = last(cache)
    assert req.flow == "agent_user"
    assert req.user_object_id == USER_OID
    assert req.username is None
    assert req.user_assertion is None


def test_agent_user_with_app_takes_the_app_path(auth: EntraAuth, cache: RecordingCache) -> None:
    auth.downstream().for_agent(AGENT, username="u@contoso.com").authorization_header("weather", app=True)
    assert last(cache).flow == "agent_app"
    assert last(cache).username is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"username": "u@contoso.com", "user_id": USER_OID}, "mutually exclusive"),
        ({"user_id": "not-a-guid"}, "valid GUID"),
        ({"user_id": ""}, "valid GUID"),
        ({"username": ""}, "non-empty"),
        ({"username": "a b@contoso.com"}, "whitespace"),
        ({"username": "a\r\n@contoso.com"}, "whitespace"),
    ],
)
def test_agent_user_argument_errors(auth: EntraAuth, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(DownstreamRequestError, match=message) as info:
        auth.downstream().for_agent(AGENT, **kwargs)
    assert isinstance(info.value, ValueError)
    assert info.value.status_code == 400


@pytest.mark.parametrize("agent_id", ["", "  ", "agent", "../x", 42])
def test_agent_id_must_be_a_guid(auth: EntraAuth, agent_id: object) -> None:
    with pytest.raises(DownstreamRequestError, match="GUID"):
        auth.downstream().for_agent(agent_id)  # type: ignore[arg-type]


def test_repr_never_shows_the_token(auth: EntraAuth) -> None:
    downstream = auth.downstream(caller(), USER_TOKEN).for_agent(AGENT)
    assert USER_TOKEN not in repr(downstream)
    assert AGENT in repr(downstream)


@pytest.mark.anyio
async def test_async_twin_plans_the_same(auth: EntraAuth, cache: RecordingCache) -> None:
    header = await auth.downstream(caller(), USER_TOKEN).for_agent(AGENT).aauthorization_header("graph")
    assert header.startswith("Bearer ")
    assert last(cache).flow == "agent_obo"
    header = await auth.downstream().aauthorization_header("weather", app=True)
    assert last(cache).flow == "app"
