"""Every ``Downstream`` flow end to end against FakeEntra, sync and async (spec §1.4, §3.2-3.5, §3.7):
app-only, OBO, autonomous agent, agent OBO, agent user by UPN and by object id; cache isolation; the claims
challenge retry. The downstream API is a handler behind a routing transport that checks the token it
receives."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from entra_mw import ClientSecret, DownstreamApi, EntraAuth, EntraConfig, Principal, TokenAcquisitionError
from entra_mw.testing import FakeClock, FakeEntra, Scenario

from ._routing import RoutingTransport

API_HOST = "weather.example"
CLAIMS = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'


@dataclass
class WeatherApi:
    """The downstream API: verifies each token's signature with FakeEntra's keys and records its claims."""

    fake: FakeEntra
    seen: list[dict[str, Any]] = field(default_factory=list)
    challenge_next: int = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            return httpx2.Response(401, headers={"WWW-Authenticate": "Bearer"})
        claims = self.fake.decode(token)
        self.seen.append(claims)
        if self.challenge_next > 0:
            self.challenge_next -= 1
            encoded = base64.b64encode(CLAIMS.encode()).decode()
            challenge = f'Bearer error="insufficient_claims", claims="{encoded}"'
            return httpx2.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx2.Response(200, json={"forecast": "sunny", "path": request.url.path})


@dataclass
class World:
    fake: FakeEntra
    scn: Scenario
    api: WeatherApi
    auth: EntraAuth

    @property
    def resource(self) -> str:
        return self.scn.api.identifier_uris[0]

    def tc(self, user: Any = None) -> str:
        """A user's token for the blueprint (Tc: audience = the blueprint, spec §3.4)."""
        return self.fake.user_token(
            user or self.scn.user,
            client=self.scn.client,
            resource=self.scn.blueprint,
            scopes=["access_agent"],
        )

    def principal(self, token: str) -> Principal:
        return Principal(self.fake.decode(token))

    def token_requests(self) -> int:
        return self.fake.request_count("token")


@pytest.fixture
def world(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[World]:
    scn = fake_entra.quickstart()
    api = WeatherApi(fake_entra)
    resource = scn.api.identifier_uris[0]
    transport = RoutingTransport({API_HOST: api}, fallback=fake_entra.transport, afallback=fake_entra.async_transport)
    config = EntraConfig(
        tenant_id=scn.tenant.tenant_id,
        client_id=scn.blueprint.app_id,
        credentials=(ClientSecret(scn.blueprint_secret),),
        downstream_apis={
            "weather": DownstreamApi(base_url=f"https://{API_HOST}/v1/", scopes=(f"{resource}/Weather.Read",)),
            "weather_app": DownstreamApi(
                base_url=f"https://{API_HOST}/v1/", scopes=(f"{resource}/.default",), request_app_token=True
            ),
        },
    )
    auth = EntraAuth(config, transport=transport, async_transport=transport, clock=fake_clock)
    try:
        yield World(fake=fake_entra, scn=scn, api=api, auth=auth)
    finally:
        auth.close()


# -- each flow --------------------------------------------------------------------------------------


def test_app_only(world: World) -> None:
    response = world.auth.downstream().call("weather_app", "forecast")
    assert response.status_code == 200
    assert response.json()["path"] == "/v1/forecast"
    (claims,) = world.api.seen
    assert claims["azp"] == world.scn.blueprint.app_id
    assert claims["idtyp"] == "app"
    assert claims["tid"] == world.scn.tenant.tenant_id
    assert "scp" not in claims
    assert world.fake.request_count("token:client_credentials") == 1


def test_obo(world: World) -> None:
    tc = world.tc()
    downstream = world.auth.downstream(world.principal(tc), tc)
    response = downstream.call("weather", "forecast")
    assert response.status_code == 200
    (claims,) = world.api.seen
    assert claims["idtyp"] == "user"
    assert claims["oid"] == world.scn.user.object_id
    assert claims["azp"] == world.scn.blueprint.app_id
    assert "Weather.Read" in claims["scp"].split()
    assert world.fake.request_count("token:jwt_bearer") == 1


def test_autonomous_agent(world: World) -> None:
    agent = world.auth.downstream().for_agent(world.scn.agent.app_id)
    response = agent.call("weather_app", "forecast")
    assert response.status_code == 200
    (claims,) = world.api.seen
    assert claims["azp"] == world.scn.agent.app_id
    assert claims["xms_par_app_azp"] == world.scn.blueprint.app_id
    assert claims["idtyp"] == "app"
    assert "11" in claims["xms_act_fct"].split()
    # T1 (fmi_path) then the agent's client credentials (spec §3.2-3.3).
    assert world.fake.request_count("token:client_credentials") == 2


def test_autonomous_agent_with_scopes_override(world: World) -> None:
    # No caller token, app=True: the agent acts on its own; scopes= replaces the API's delegated scope with '.default'.
    agent = world.auth.downstream().for_agent(world.scn.agent.app_id)
    header = agent.authorization_header("weather", scopes=[f"{world.resource}/.default"], app=True)
    claims = world.fake.decode(header.removeprefix("Bearer "))
    assert claims["idtyp"] == "app"
    assert claims["azp"] == world.scn.agent.app_id


def test_agent_obo(world: World) -> None:
    tc = world.tc()
    agent = world.auth.downstream(world.principal(tc), tc).for_agent(world.scn.agent.app_id)
    response = agent.call("weather", "forecast")
    assert response.status_code == 200
    (claims,) = world.api.seen
    assert claims["idtyp"] == "user"
    assert claims["oid"] == world.scn.user.object_id
    assert claims["azp"] == world.scn.agent.app_id
    assert claims["xms_par_app_azp"] == world.scn.blueprint.app_id
    assert world.fake.request_count("token:client_credentials") == 1  # T1
    assert world.fake.request_count("token:jwt_bearer") == 1


@pytest.mark.parametrize("by", ["username", "user_id"])
def test_agent_user(world: World, by: str) -> None:
    agent_user = world.scn.agent_user
    arg = {"username": agent_user.upn} if by == "username" else {"user_id": agent_user.object_id}
    agent = world.auth.downstream().for_agent(world.scn.agent.app_id, **arg)
    response = agent.call("weather", "forecast")
    assert response.status_code == 200
    (claims,) = world.api.seen
    assert claims["oid"] == agent_user.object_id
    assert claims["azp"] == world.scn.agent.app_id
    assert claims["idtyp"] == "user"
    assert "13" in claims["xms_sub_fct"].split()
    # T1 and T2 (client credentials), then user_fic (spec §3.5).
    assert world.fake.request_count("token:client_credentials") == 2
    assert world.fake.request_count("token:user_fic") == 1


# -- caching and isolation --------------------------------------------------------------------------


def test_same_user_twice_is_one_token_request(world: World) -> None:
    tc = world.tc()
    first = world.auth.downstream(world.principal(tc), tc).authorization_header("weather")
    before = world.token_requests()
    second = world.auth.downstream(world.principal(tc), tc).authorization_header("weather")
    assert first == second
    assert world.token_requests() == before


def test_two_users_get_two_tokens(world: World) -> None:
    bob = world.fake.add_user(world.scn.tenant, upn="bob@contoso.onmicrosoft.com", password="x")
    tc_alice, tc_bob = world.tc(), world.tc(bob)
    alice_header = world.auth.downstream(world.principal(tc_alice), tc_alice).authorization_header("weather")
    bob_header = world.auth.downstream(world.principal(tc_bob), tc_bob).authorization_header("weather")
    assert alice_header != bob_header
    assert world.fake.request_count("token:jwt_bearer") == 2
    assert world.fake.decode(bob_header.removeprefix("Bearer "))["oid"] == bob.object_id
    assert world.fake.decode(alice_header.removeprefix("Bearer "))["oid"] == world.scn.user.object_id


def test_agents_flows_and_scopes_never_share_tokens(world: World) -> None:
    scn = world.scn
    other = world.fake.add_agent_identity(scn.blueprint, display_name="other-agent")
    world.fake.grant_app_roles(other, scn.api, scn.api.app_roles)
    root = world.auth.downstream()
    headers = {
        "blueprint": root.authorization_header("weather_app"),
        "agent": root.for_agent(scn.agent.app_id).authorization_header("weather_app"),
        "other": root.for_agent(other.app_id).authorization_header("weather_app"),
        "agent_user": root.for_agent(scn.agent.app_id, username=scn.agent_user.upn).authorization_header("weather"),
    }
    assert len(set(headers.values())) == 4
    azps = {name: world.fake.decode(h.removeprefix("Bearer "))["azp"] for name, h in headers.items()}
    assert azps == {
        "blueprint": scn.blueprint.app_id,
        "agent": scn.agent.app_id,
        "other": other.app_id,
        "agent_user": scn.agent.app_id,
    }
    before = world.token_requests()
    assert root.for_agent(scn.agent.app_id).authorization_header("weather_app") == headers["agent"]
    assert root.for_agent(other.app_id).authorization_header("weather_app") == headers["other"]
    assert world.token_requests() == before


def test_force_refresh_gets_a_new_token(world: World) -> None:
    root = world.auth.downstream()
    root.authorization_header("weather_app")
    before = world.token_requests()
    root.authorization_header("weather_app", force_refresh=True)
    assert world.token_requests() == before + 1


# -- claims challenge -------------------------------------------------------------------------------


def test_claims_challenge_triggers_one_reacquisition(world: World) -> None:
    world.api.challenge_next = 1
    tc = world.tc()
    downstream = world.auth.downstream(world.principal(tc), tc)
    before = world.fake.request_count("token:jwt_bearer")
    response = downstream.call("weather", "forecast")
    assert response.status_code == 200
    assert len(world.api.seen) == 2
    # The first OBO token, then one forced re-acquisition carrying the claims.
    assert world.fake.request_count("token:jwt_bearer") == before + 2


def test_claims_challenge_is_answered_once_only(world: World) -> None:
    world.api.challenge_next = 5
    response = world.auth.downstream().call("weather_app", "forecast")
    assert response.status_code == 401
    assert len(world.api.seen) == 2
    assert world.fake.request_count("token:client_credentials") == 2


def test_obo_runs_in_the_callers_tenant(world: World) -> None:
    tc = world.tc()
    principal = world.principal(tc)
    assert principal.tid == world.scn.tenant.tenant_id
    header = world.auth.downstream(principal, tc).authorization_header("weather")
    assert world.fake.decode(header.removeprefix("Bearer "))["tid"] == world.scn.tenant.tenant_id


# -- async twins ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_every_flow(world: World) -> None:
    scn = world.scn
    tc = world.tc()
    root = world.auth.downstream()
    caller = world.auth.downstream(world.principal(tc), tc)
    responses = [
        await root.acall("weather_app", "a"),
        await caller.acall("weather", "b"),
        await root.for_agent(scn.agent.app_id).acall("weather_app", "c"),
        await caller.for_agent(scn.agent.app_id).acall("weather", "d"),
        await root.for_agent(scn.agent.app_id, username=scn.agent_user.upn).acall("weather", "e"),
        await root.for_agent(scn.agent.app_id, user_id=scn.agent_user.object_id).acall("weather", "f"),
    ]
    assert [r.status_code for r in responses] == [200] * 6
    seen = world.api.seen
    assert [c["azp"] for c in seen] == [scn.blueprint.app_id] * 2 + [scn.agent.app_id] * 4
    assert [c["idtyp"] for c in seen] == ["app", "user", "app", "user", "user", "user"]
    assert seen[1]["oid"] == seen[3]["oid"] == scn.user.object_id
    assert seen[4]["oid"] == seen[5]["oid"] == scn.agent_user.object_id
    before = world.token_requests()
    header = await caller.for_agent(scn.agent.app_id).aauthorization_header("weather")
    assert header.startswith("Bearer ")
    assert world.token_requests() == before
    await world.auth.aclose()


# -- Entra's refusals surface as TokenAcquisitionError ----------------------------------------------


def test_mfa_required_surfaces_the_claims_challenge(world: World) -> None:
    carol = world.fake.add_user(world.scn.tenant, upn="carol@contoso.onmicrosoft.com", password="x")
    carol.mfa_required = True
    tc = world.tc(carol)
    with pytest.raises(TokenAcquisitionError) as info:
        world.auth.downstream(world.principal(tc), tc).call("weather", "forecast")
    assert info.value.status_code == 401
    assert info.value.claims
    assert world.api.seen == []
    assert tc not in str(info.value)


def test_unknown_agent_is_refused_by_entra(world: World) -> None:
    agent = world.auth.downstream().for_agent("0f0f0f0f-0000-4000-8000-00000000dead")
    with pytest.raises(TokenAcquisitionError):
        agent.authorization_header("weather_app")
