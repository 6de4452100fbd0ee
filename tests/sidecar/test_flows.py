"""Which Entra flow each request uses (spec §1.4), the agent parameters (§1.3.1, with DESIGN §3's 400s) and every
``optionsOverride.*`` key with the 1.1.x gating and merge rules (§1.3.2), checked on the token that comes back."""

from __future__ import annotations

import logging
from typing import Any

import httpx2
import pytest

from entra_mw.testing import FakeEntra, Scenario

from ._support import user_token
from .conftest import StartSidecar

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]

UNAUTH_OVERRIDES = "Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated"


def header_claims(fake: FakeEntra, response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    scheme, _, token = response.json()["authorizationHeader"].partition(" ")
    assert scheme == "Bearer"
    return fake.decode(token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- flows ------------------------------------------------------------------------------------------------------


def test_obo_for_the_caller(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    claims = header_claims(fake, client.get("/AuthorizationHeader/weather", headers=bearer(tc)))
    assert claims["aud"] == scn.api.app_id
    assert claims["azp"] == scn.blueprint.app_id
    assert claims["oid"] == scn.user.object_id
    assert claims["scp"] == "Weather.Read"


def test_app_token_when_the_api_asks_for_one(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    claims = header_claims(fake, client.get("/AuthorizationHeaderUnauthenticated/graph"))
    assert claims["azp"] == scn.blueprint.app_id
    assert claims["idtyp"] == "app"
    assert "Weather.Read.All" in claims["roles"]
    # The authenticated route with RequestAppToken=true also gives the blueprint's app token.
    claims = header_claims(fake, client.get("/AuthorizationHeader/graph", headers=bearer(user_token(fake, scn))))
    assert claims["idtyp"] == "app"
    assert claims["azp"] == scn.blueprint.app_id


def test_default_gate_ignores_agent_identity_on_unauthenticated_routes(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario
) -> None:
    # 1.1.x: AllowOverrides.GetAuthorizationHeaderUnauthenticated defaults to false, so AgentIdentity is dropped
    # and the blueprint's own token comes back (AgentOverrideGatingTests).
    response = client.get(f"/AuthorizationHeaderUnauthenticated/graph?AgentIdentity={scn.agent.app_id}")
    assert header_claims(fake, response)["azp"] == scn.blueprint.app_id
    # ... and so are the DESIGN §3 checks: nothing of the agent parameters is looked at.
    assert client.get("/AuthorizationHeaderUnauthenticated/graph?AgentUsername=x").status_code == 200


def test_autonomous_agent_with_the_unauthenticated_override(
    start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario
) -> None:
    sidecar = start_sidecar(**{UNAUTH_OVERRIDES: "true"})
    before = fake.request_count("token")
    claims = header_claims(
        fake, sidecar.get(f"/AuthorizationHeaderUnauthenticated/graph?agentidentity={scn.agent.app_id}")
    )
    assert claims["azp"] == scn.agent.app_id
    assert claims["idtyp"] == "app"
    assert claims["aud"] == scn.api.app_id
    assert fake.request_count("token") - before == 2  # T1 (fmi_path), then the agent's client credentials
    # Cached: the same request again costs nothing.
    again = sidecar.get(f"/AuthorizationHeaderUnauthenticated/graph?AgentIdentity={scn.agent.app_id}")
    assert header_claims(fake, again)["azp"] == scn.agent.app_id
    assert fake.request_count("token") - before == 2


def test_agent_obo(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    response = client.get(f"/AuthorizationHeader/weather?AgentIdentity={scn.agent.app_id}", headers=bearer(tc))
    claims = header_claims(fake, response)
    assert claims["azp"] == scn.agent.app_id
    assert claims["oid"] == scn.user.object_id
    assert claims["idtyp"] == "user"


def test_request_app_token_false_cannot_switch_off_a_configured_true(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario
) -> None:
    # The Kubernetes article's command, against its ConfigMap (graph: RequestAppToken=true): merged only when
    # true, so the agent's app token comes back, not agent OBO (spec §1.3.2).
    tc = user_token(fake, scn)
    url = f"/AuthorizationHeader/graph?optionsOverride.RequestAppToken=false&AgentIdentity={scn.agent.app_id}"
    claims = header_claims(fake, client.get(url, headers=bearer(tc)))
    assert claims["azp"] == scn.agent.app_id
    assert claims["idtyp"] == "app"


def test_request_app_token_true_override(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    url = f"/AuthorizationHeader/weather?optionsOverride.RequestAppToken=TRUE&optionsOverride.Scopes=api://{scn.api.app_id}/.default"
    claims = header_claims(fake, client.get(url, headers=bearer(tc)))
    assert claims["idtyp"] == "app"
    assert claims["azp"] == scn.blueprint.app_id


@pytest.mark.parametrize("param", ["AgentUsername", "agentusername"])
def test_agent_user_by_upn(client: httpx2.Client, fake: FakeEntra, scn: Scenario, param: str) -> None:
    tc = user_token(fake, scn)
    url = f"/AuthorizationHeader/weather?AgentIdentity={scn.agent.app_id}&{param}={scn.agent_user.upn}"
    claims = header_claims(fake, client.get(url, headers=bearer(tc)))
    # The agent-user leg runs before OBO even with a caller token (spec §1.4).
    assert claims["oid"] == scn.agent_user.object_id
    assert claims["azp"] == scn.agent.app_id


def test_agent_user_by_object_id(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    url = f"/AuthorizationHeader/weather?AgentIdentity={scn.agent.app_id}&AgentUserId={scn.agent_user.object_id}"
    claims = header_claims(fake, client.get(url, headers=bearer(tc)))
    assert claims["oid"] == scn.agent_user.object_id


def test_agent_user_without_a_caller(start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario) -> None:
    sidecar = start_sidecar(**{UNAUTH_OVERRIDES: "true"})
    url = (
        f"/AuthorizationHeaderUnauthenticated/weather?AgentIdentity={scn.agent.app_id}"
        f"&AgentUsername={scn.agent_user.upn}"
    )
    assert header_claims(fake, sidecar.get(url))["oid"] == scn.agent_user.object_id


def test_delegated_api_without_a_caller_is_401(start_sidecar: StartSidecar, scn: Scenario) -> None:
    # *Unauthenticated + a delegated API (RequestAppToken=false): no user to act for (spec §1.4, issue #3643).
    sidecar = start_sidecar(**{UNAUTH_OVERRIDES: "true"})
    for url in (
        "/AuthorizationHeaderUnauthenticated/weather",
        f"/AuthorizationHeaderUnauthenticated/weather?AgentIdentity={scn.agent.app_id}",
    ):
        response = sidecar.get(url)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert "RequestAppToken" in response.json()["detail"]


def test_no_caller_says_when_the_request_app_token_override_was_gated_off(client: httpx2.Client) -> None:
    # Default settings: overrides are off on the *Unauthenticated routes, so asking for an app token in the query
    # changes nothing; the answer says so instead of only repeating "Set RequestAppToken=true".
    for path in ("/AuthorizationHeaderUnauthenticated/weather", "/DownstreamApiUnauthenticated/weather"):
        method = "GET" if path.startswith("/Authorization") else "POST"
        plain = client.request(method, path)
        assert plain.status_code == 401
        assert "optionsOverride was ignored" not in plain.json()["detail"]
        gated = client.request(method, f"{path}?optionsOverride.RequestAppToken=true")
        assert gated.status_code == 401
        detail = gated.json()["detail"]
        flag = "GetAuthorizationHeaderUnauthenticated" if method == "GET" else "CallDownstreamApiUnauthenticated"
        assert f"optionsOverride was ignored: Sidecar__AllowOverrides__{flag} is false" in detail
        assert "DownstreamApis__weather__RequestAppToken=true" in detail


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("AgentUsername=bob@contoso.com", "AgentUsername requires AgentIdentity to be specified"),
        ("AgentUserId=2f3c5a2e-1111-4222-8333-444455556666", "AgentUserId requires AgentIdentity to be specified"),
        ("AgentIdentity=&AgentUsername=bob@contoso.com", "AgentUsername requires AgentIdentity to be specified"),
        (
            "AgentIdentity={agent}&AgentUsername=bob@contoso.com&AgentUserId=2f3c5a2e-1111-4222-8333-444455556666",
            "AgentUsername and AgentUserId are mutually exclusive",
        ),
        ("AgentIdentity={agent}&AgentUserId=not-a-guid", "AgentUserId must be a valid GUID"),
        ("AgentIdentity=not-a-guid", "AgentIdentity must be the agent identity's client id (a GUID)"),
    ],
)
def test_documented_agent_parameter_errors(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario, query: str, detail: str
) -> None:
    before = fake.request_count("token")
    response = client.get(
        "/AuthorizationHeader/weather?" + query.format(agent=scn.agent.app_id), headers=bearer(user_token(fake, scn))
    )
    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert response.json()["title"] == "Bad Request"
    assert fake.request_count("token") == before


# -- optionsOverride ----------------------------------------------------------------------------------------------


def test_scopes_override_replaces_the_configured_ones(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    # An API that is not configured works with override scopes (the FAQ's form, one value per key).
    url = f"/AuthorizationHeader/anything?optionsOverride.Scopes=api://{scn.api.app_id}/Weather.Read&optionsOverride.Scopes="
    claims = header_claims(fake, client.get(url, headers=bearer(tc)))
    assert claims["aud"] == scn.api.app_id
    assert claims["scp"] == "Weather.Read"
    # Key names are case-insensitive, the E2E tests' OptionsOverride. prefix included.
    url = f"/AuthorizationHeader/anything?OptionsOverride.scopes=api://{scn.api.app_id}/Weather.Read"
    assert header_claims(fake, client.get(url, headers=bearer(tc)))["aud"] == scn.api.app_id


def test_tenant_override(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    # The FAQ's multi-tenant command; the tenant's domain names the same tenant here.
    url = f"/AuthorizationHeaderUnauthenticated/graph?optionsOverride.AcquireTokenOptions.Tenant={scn.tenant.domain}"
    # Unauthenticated routes ignore overrides by default: the configured tenant is used and nothing fails.
    assert header_claims(fake, client.get(url))["tid"] == scn.tenant.tenant_id
    url = f"/AuthorizationHeader/graph?optionsOverride.AcquireTokenOptions.Tenant={scn.tenant.tenant_id}"
    claims = header_claims(fake, client.get(url, headers=bearer(user_token(fake, scn))))
    assert claims["tid"] == scn.tenant.tenant_id
    url = "/AuthorizationHeader/graph?optionsOverride.AcquireTokenOptions.Tenant=9a8b7c6d-0000-4000-8000-000000000001"
    response = client.get(url, headers=bearer(user_token(fake, scn)))
    assert response.status_code == 401  # Entra: no such tenant
    assert "AADSTS" in response.json()["detail"]


def test_force_refresh_bypasses_the_cache(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    client.get("/AuthorizationHeader/graph", headers=bearer(tc))
    before = fake.request_count("token")
    client.get("/AuthorizationHeader/graph", headers=bearer(tc))
    assert fake.request_count("token") == before
    url = "/AuthorizationHeader/graph?optionsOverride.AcquireTokenOptions.ForceRefresh=true"
    assert client.get(url, headers=bearer(tc)).status_code == 200
    assert fake.request_count("token") == before + 1


def test_overrides_gated_off_are_ignored(start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario) -> None:
    sidecar = start_sidecar(Sidecar__AllowOverrides__GetAuthorizationHeader="false")
    tc = user_token(fake, scn)
    url = f"/AuthorizationHeader/weather?optionsOverride.RequestAppToken=true&optionsOverride.Scopes=api://{scn.api.app_id}/.default&AgentIdentity={scn.agent.app_id}"
    claims = header_claims(fake, sidecar.get(url, headers=bearer(tc)))
    # Plain OBO as the blueprint: no app token, no agent.
    assert claims["azp"] == scn.blueprint.app_id
    assert claims["oid"] == scn.user.object_id
    # Gated-off agent parameters are not checked either.
    assert sidecar.get("/AuthorizationHeader/weather?AgentUserId=x", headers=bearer(tc)).status_code == 200


def test_base_url_override_is_ignored(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="entra_mw.sidecar")
    response = client.get("/AuthorizationHeaderUnauthenticated/graph?optionsOverride.BaseUrl=https://evil.example/")
    assert header_claims(fake, response)["azp"] == scn.blueprint.app_id
    assert any("optionsOverride.BaseUrl ignored" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "key",
    [
        "AcquireTokenOptions.PopPublicKey",
        "AcquireTokenOptions.FmiPath",
        "AcquireTokenOptions.LongRunningWebApiSessionKey",
        "AcquireTokenOptions.ManagedIdentity.UserAssignedClientId",
    ],
)
def test_unsupported_overrides_are_clear_400s(client: httpx2.Client, fake: FakeEntra, scn: Scenario, key: str) -> None:
    response = client.get(f"/AuthorizationHeader/graph?optionsOverride.{key}=x", headers=bearer(user_token(fake, scn)))
    assert response.status_code == 400
    assert f"optionsOverride.{key}" in response.json()["detail"]


def test_ignored_and_harmless_overrides(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    for query in (
        "optionsOverride.AcquireTokenOptions.CorrelationId=0b7f5f3c-1111-4222-8333-444455556666",
        "optionsOverride.AcquireTokenOptions.CorrelationId=not-a-guid",
        "optionsOverride.Unknown=1",
        "optionsOverride.AcquireTokenOptions.PopClaim=x",
        "optionsOverride.ContentType=text/plain",
        "optionsOverride.RequestAppToken=maybe",
    ):
        assert client.get(f"/AuthorizationHeader/graph?{query}", headers=bearer(tc)).status_code == 200, query


def test_app_scope_override_without_default_is_a_400(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    # IDW10404 would be a 500 in the official sidecar; a request's own override earns a clear 400 here.
    response = client.get(
        "/AuthorizationHeader/graph?optionsOverride.Scopes=User.Read", headers=bearer(user_token(fake, scn))
    )
    assert response.status_code == 400
    assert "/.default" in response.json()["detail"]


def test_claims_challenge_override_asks_entra_again(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    assert client.get("/AuthorizationHeader/weather", headers=bearer(tc)).status_code == 200
    before = fake.request_count("token")
    claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'
    response = client.get(
        "/AuthorizationHeader/weather",
        params={"optionsOverride.AcquireTokenOptions.Claims": claims},
        headers=bearer(tc),
    )
    assert header_claims(fake, response)["oid"] == scn.user.object_id
    assert fake.request_count("token") == before + 1  # a claims challenge is never answered from the cache
