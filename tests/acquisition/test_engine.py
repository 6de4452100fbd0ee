"""The acquisition engine end to end against FakeEntra: every flow, sync and async (asyncio and trio)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from entra_mw._acquisition._types import AccessToken, TokenRequest
from entra_mw._acquisition.engine import Acquirer
from entra_mw.errors import ConfigurationError
from entra_mw.testing import FakeClock, FakeEntra, Scenario

from .conftest import AcquirerFactory


@pytest.fixture
def acquirer(make_acquirer: AcquirerFactory) -> Acquirer:
    return make_acquirer()


def api_default(scn: Scenario) -> str:
    return scn.api.identifier_uris[0] + "/.default"


def api_read(scn: Scenario) -> str:
    return scn.api.identifier_uris[0] + "/Weather.Read"


def request(scn: Scenario, flow: Any, **kw: Any) -> TokenRequest:
    if flow in ("app", "agent_app"):
        kw.setdefault("scopes", (api_default(scn),))
    else:
        kw.setdefault("scopes", (api_read(scn),))
    if flow.startswith("agent_"):
        kw.setdefault("agent_id", scn.agent.app_id)
    kw.setdefault("tenant", scn.tenant.tenant_id)
    return TokenRequest(flow=flow, client_id=scn.blueprint.app_id, **kw)


def caller_token(fake: FakeEntra, scn: Scenario) -> str:
    """Tc: the user's token for the blueprint (the API this middle tier protects)."""
    return fake.user_token(scn.user, client=scn.client, resource=scn.blueprint)


def test_app_flow_and_msal_app_cache(
    fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario, acquirer: Acquirer
) -> None:
    token = acquirer.fetch(request(scn, "app"))
    claims = fake_entra.decode(token.token)
    assert claims["aud"] == scn.api.app_id
    assert claims["azp"] == scn.blueprint.app_id
    assert claims["idtyp"] == "app"
    assert token.tenant == scn.tenant.tenant_id
    assert token.scopes == (api_default(scn),)
    assert token.token_type == "Bearer"
    assert token.expires_on == pytest.approx(claims["exp"], abs=2)
    assert fake_entra.request_count("token:client_credentials") == 1
    again = acquirer.fetch(request(scn, "app"))
    assert again.token == token.token  # MSAL's app-token cache
    assert fake_entra.request_count("token") == 1
    assert fake_entra.request_count("openid_configuration") == 1


def test_app_flow_force_refresh_and_claims_bypass_the_cache(
    fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer
) -> None:
    first = acquirer.fetch(request(scn, "app"))
    forced = acquirer.fetch(request(scn, "app", force_refresh=True))
    assert forced.token != first.token
    assert fake_entra.request_count("token") == 2
    challenged = acquirer.fetch(request(scn, "app", claims='{"access_token":{"xms_cc":{"values":["cp1"]}}}'))
    assert challenged.token not in (first.token, forced.token)
    assert fake_entra.request_count("token") == 3
    # the refreshed token replaced the old one in MSAL's cache
    assert acquirer.fetch(request(scn, "app")).token == challenged.token
    assert fake_entra.request_count("token") == 3


def test_msal_cache_follows_the_engine_clock(
    fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario, acquirer: Acquirer
) -> None:
    first = acquirer.fetch(request(scn, "app"))
    fake_clock.advance(first.expires_on - fake_clock.time() - 200)  # inside MSAL's 5-minute expiry margin
    second = acquirer.fetch(request(scn, "app"))
    assert second.token != first.token
    assert fake_entra.request_count("token") == 2
    assert second.expires_on > first.expires_on


def test_obo_always_asks_entra(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    tc = caller_token(fake_entra, scn)
    token = acquirer.fetch(request(scn, "obo", user_assertion=tc))
    claims = fake_entra.decode(token.token)
    assert claims["aud"] == scn.api.app_id
    assert claims["oid"] == scn.user.object_id
    assert claims["scp"] == "Weather.Read"
    assert claims["azp"] == scn.blueprint.app_id
    acquirer.fetch(request(scn, "obo", user_assertion=tc))
    assert fake_entra.request_count("token:jwt_bearer") == 2  # MSAL never reads OBO results back (§3.8)


def test_reserved_scopes_are_left_to_msal(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    tc = caller_token(fake_entra, scn)
    token = acquirer.fetch(request(scn, "obo", user_assertion=tc, scopes=("openid", api_read(scn))))
    assert fake_entra.decode(token.token)["scp"] == "Weather.Read"


def test_agent_app_flow_t1_then_agent_token(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    token = acquirer.fetch(request(scn, "agent_app"))
    claims = fake_entra.decode(token.token)
    assert claims["azp"] == scn.agent.app_id
    assert claims["xms_par_app_azp"] == scn.blueprint.app_id
    assert claims["idtyp"] == "app"
    assert "Weather.Read.All" in claims["roles"]
    assert fake_entra.request_count("token:client_credentials") == 2  # T1 + the agent's token
    assert acquirer.fetch(request(scn, "agent_app")).token == token.token
    assert fake_entra.request_count("token") == 2


def test_t1_is_cached_per_agent(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    second_agent = fake_entra.add_agent_identity(scn.blueprint, display_name="second")
    fake_entra.grant_app_roles(second_agent, scn.api, scn.api.app_roles)
    a = acquirer.fetch(request(scn, "agent_app"))
    b = acquirer.fetch(request(scn, "agent_app", agent_id=second_agent.app_id))
    assert fake_entra.decode(a.token)["azp"] == scn.agent.app_id
    assert fake_entra.decode(b.token)["azp"] == second_agent.app_id
    assert fake_entra.request_count("token") == 4  # one T1 per agent (fmi_path isolates them) + two tokens
    tc = caller_token(fake_entra, scn)
    acquirer.fetch(request(scn, "agent_obo", user_assertion=tc))
    assert fake_entra.request_count("token") == 5  # T1 reused from MSAL's cache


def test_agent_obo_flow(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    tc = caller_token(fake_entra, scn)
    token = acquirer.fetch(request(scn, "agent_obo", user_assertion=tc))
    claims = fake_entra.decode(token.token)
    assert claims["azp"] == scn.agent.app_id
    assert claims["oid"] == scn.user.object_id
    assert claims["xms_par_app_azp"] == scn.blueprint.app_id
    assert claims["scp"] == "Weather.Read"
    assert fake_entra.request_count("token:client_credentials") == 1  # T1
    assert fake_entra.request_count("token:jwt_bearer") == 1


@pytest.mark.parametrize("by", ["username", "user_object_id"])
def test_agent_user_flow(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer, by: str) -> None:
    who = {"username": scn.agent_user.upn} if by == "username" else {"user_object_id": scn.agent_user.object_id}
    token = acquirer.fetch(request(scn, "agent_user", **who))
    claims = fake_entra.decode(token.token)
    assert claims["oid"] == scn.agent_user.object_id
    assert claims["azp"] == scn.agent.app_id
    assert claims["idtyp"] == "user"
    assert "13" in claims["xms_sub_fct"].split()
    assert fake_entra.request_count("token:client_credentials") == 2  # T1 and T2
    assert fake_entra.request_count("token:user_fic") == 1
    acquirer.fetch(request(scn, "agent_user", **who))
    assert fake_entra.request_count("token:client_credentials") == 2  # T1 and T2 from MSAL's cache
    assert fake_entra.request_count("token:user_fic") == 2


def test_agent_user_needs_exactly_one_name(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    both = request(scn, "agent_user", username=scn.agent_user.upn, user_object_id=scn.agent_user.object_id)
    with pytest.raises(ConfigurationError, match="not both"):
        acquirer.fetch(both)
    with pytest.raises(ConfigurationError, match="username"):
        acquirer.fetch(request(scn, "agent_user"))
    with pytest.raises(ConfigurationError, match="GUID"):
        acquirer.fetch(request(scn, "agent_user", user_object_id="not-a-guid"))
    assert fake_entra.request_count("token") == 0


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"flow": "app", "scopes": ("User.Read",)}, "IDW10404"),
        ({"flow": "agent_app", "scopes": ("api://x/read",)}, "IDW10404"),
        ({"flow": "app", "tenant": "common"}, "IDW10405"),
        ({"flow": "app", "tenant": "../evil"}, "invalid tenant"),
        ({"flow": "obo"}, "user_assertion"),
        ({"flow": "obo", "user_assertion": "x", "scopes": ("openid", "profile")}, "resource scope"),
        ({"flow": "app", "scopes": ()}, "scopes"),
        ({"flow": "app", "scopes": ("a b/.default",)}, "scopes"),
        ({"flow": "agent_app", "agent_id": ""}, "agent identity"),
        ({"flow": "nope"}, "unknown token flow"),
    ],
)
def test_requests_that_can_never_work_fail_before_the_network(
    fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer, changes: dict[str, Any], match: str
) -> None:
    flow = changes.pop("flow")
    req = request(scn, flow if flow != "nope" else "app", **changes)
    if flow == "nope":
        object.__setattr__(req, "flow", "nope")
    with pytest.raises(ConfigurationError, match=match):
        acquirer.fetch(req)
    assert fake_entra.request_count("token") == 0


def test_msal_caches_stay_bounded_under_many_users(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    users = [fake_entra.add_user(scn.tenant, password="pw") for _ in range(40)]
    for user in users:
        tc = fake_entra.user_token(user, client=scn.client, resource=scn.blueprint)
        acquirer.fetch(request(scn, "obo", user_assertion=tc))
        acquirer.fetch(request(scn, "agent_obo", user_assertion=tc))
    for _ in range(5):
        acquirer.fetch(request(scn, "agent_user", username=scn.agent_user.upn))
    sizes = acquirer.msal_cache_sizes()
    # blueprint: T1 only; agent: T2 only. No user entries, however many users came by.
    assert sizes == {"blueprint": 1, "agents": 1, "apps": 2}
    assert fake_entra.request_count("token:jwt_bearer") == 80


def test_no_token_in_logs(
    fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="entra_mw")
    tc = caller_token(fake_entra, scn)
    tokens = [
        acquirer.fetch(request(scn, "app")),
        acquirer.fetch(request(scn, "agent_user", username=scn.agent_user.upn)),
        acquirer.fetch(request(scn, "agent_obo", user_assertion=tc)),
    ]
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("entra_mw"))
    assert "token acquired flow=agent_obo" in text
    for secret in [tc, scn.blueprint_secret, *(t.token for t in tokens)]:
        assert secret not in text
        assert secret[-20:] not in text


def test_repr_hides_token(scn: Scenario, acquirer: Acquirer) -> None:
    token = acquirer.fetch(request(scn, "app"))
    assert token.token not in repr(token)


# -- async ------------------------------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
@pytest.mark.parametrize("flow", ["app", "obo", "agent_app", "agent_obo", "agent_user"])
async def test_every_flow_async(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer, flow: str) -> None:
    extra: dict[str, Any] = {}
    if flow in ("obo", "agent_obo"):
        extra["user_assertion"] = caller_token(fake_entra, scn)
    if flow == "agent_user":
        extra["username"] = scn.agent_user.upn
    token = await acquirer.afetch(request(scn, flow, **extra))
    assert isinstance(token, AccessToken)
    claims = fake_entra.decode(token.token)
    assert claims["aud"] == scn.api.app_id
    expected_azp = scn.blueprint.app_id if flow in ("app", "obo") else scn.agent.app_id
    assert claims["azp"] == expected_azp


@pytest.mark.anyio
async def test_concurrent_async_fetches(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    import anyio

    results: list[AccessToken] = []
    tc = caller_token(fake_entra, scn)

    async def one() -> None:
        results.append(await acquirer.afetch(request(scn, "agent_obo", user_assertion=tc)))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(one)
    assert len(results) == 8
    assert fake_entra.request_count("token:jwt_bearer") == 8
