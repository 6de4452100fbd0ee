"""Error paths of the acquisition engine against FakeEntra: Entra's refusals, throttling, outages."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest

from entra_mw import ClientSecret
from entra_mw._acquisition._types import TokenRequest
from entra_mw._acquisition.engine import Acquirer
from entra_mw.errors import ConfigurationError, TokenAcquisitionError
from entra_mw.testing import FakeClock, FakeEntra, Scenario

from .conftest import AcquirerFactory


@pytest.fixture
def acquirer(make_acquirer: AcquirerFactory) -> Acquirer:
    return make_acquirer()


def req(scn: Scenario, flow: Any = "app", **kw: Any) -> TokenRequest:
    default = "/.default" if flow in ("app", "agent_app") else "/Weather.Read"
    kw.setdefault("scopes", (scn.api.identifier_uris[0] + default,))
    if flow.startswith("agent_"):
        kw.setdefault("agent_id", scn.agent.app_id)
    kw.setdefault("tenant", scn.tenant.tenant_id)
    return TokenRequest(flow=flow, client_id=scn.blueprint.app_id, **kw)


def no_secrets_in(exc: BaseException, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in str(exc)
        assert secret not in repr(exc)
        assert secret not in (getattr(exc, "description", "") or "")


# -- Entra refuses ---------------------------------------------------------------------------------------


def test_consent_required(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    other = fake_entra.add_app(scn.tenant, display_name="files-api", scopes=("Files.Read",))
    tc = fake_entra.user_token(scn.user, client=scn.client, resource=scn.blueprint)
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn, "obo", user_assertion=tc, scopes=(other.identifier_uris[0] + "/Files.Read",)))
    err = info.value
    assert err.error in ("invalid_grant", "interaction_required")
    assert err.suberror == "consent_required"
    assert 65001 in err.error_codes
    assert err.status_code in (401, 403)
    assert err.www_authenticate is not None
    assert err.correlation_id and err.trace_id
    assert err.description.startswith("obo: AADSTS65001")
    assert "\n" not in err.description
    no_secrets_in(err, tc)


def test_invalid_client_secret(fake_entra: FakeEntra, scn: Scenario, make_acquirer: AcquirerFactory) -> None:
    acquirer = make_acquirer(credentials=[ClientSecret("not-the-secret")])
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn))
    err = info.value
    assert err.error == "invalid_client"
    assert err.error_codes == (7000215,)
    assert err.http_status == 401
    assert err.status_code == 502  # Entra refused the app itself: a gateway problem for our caller
    assert fake_entra.request_count("token") == 1  # not retried
    no_secrets_in(err, "not-the-secret")


@pytest.mark.parametrize("flow", ["obo", "agent_obo"])
def test_expired_user_assertion_is_refused_locally_with_401(
    fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario, acquirer: Acquirer, flow: str
) -> None:
    tc = fake_entra.user_token(scn.user, client=scn.client, resource=scn.blueprint, lifetime=600)
    fake_clock.advance(600)  # exactly exp, no skew: Entra would answer AADSTS500133
    before = fake_entra.request_count("token")
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn, flow, user_assertion=tc))
    assert fake_entra.request_count("token") == before
    assert info.value.status_code == 401
    assert info.value.www_authenticate is not None
    assert info.value.www_authenticate.startswith('Bearer error="invalid_token"')
    no_secrets_in(info.value, tc)


def test_aadsts500133_from_entra_is_401_invalid_token(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    # The caller's token expired between validation and the exchange (Entra's clock is ahead of ours).
    tc = fake_entra.user_token(scn.user, client=scn.client, resource=scn.blueprint)
    body = {
        "error": "invalid_grant",
        "error_description": "AADSTS500133: Assertion is not within its valid time range.\r\nTrace ID: x",
        "error_codes": [500133],
    }
    fake_entra.faults.set("token", status=400, body=json.dumps(body).encode())
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn, "obo", user_assertion=tc))
    assert info.value.error_codes == (500133,)
    assert info.value.status_code == 401
    assert info.value.www_authenticate is not None
    assert 'error="invalid_token"' in info.value.www_authenticate
    assert fake_entra.request_count("token") == 1


def test_obo_assertion_for_another_app(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    wrong = fake_entra.user_token(scn.user, client=scn.client, resource=scn.api)  # aud = the API, not us
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn, "obo", user_assertion=wrong))
    assert info.value.error in ("invalid_grant", "invalid_request")
    assert info.value.error_codes
    no_secrets_in(info.value, wrong)


def test_agent_obo_assertion_for_another_app(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    wrong = fake_entra.user_token(scn.user, client=scn.client, resource=scn.api)
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn, "agent_obo", user_assertion=wrong))
    assert info.value.description.startswith("agent_obo:")


def test_unknown_agent(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn, "agent_app", agent_id="00000000-0000-0000-0000-00000000dead"))
    assert info.value.error_codes
    assert info.value.status_code == 502


def test_agent_user_of_another_agent(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    other = fake_entra.add_agent_identity(scn.blueprint, display_name="other")
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn, "agent_user", agent_id=other.app_id, username=scn.agent_user.upn))
    assert info.value.description.startswith("user_fic:")


def test_unknown_tenant(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn, tenant="00000000-0000-0000-0000-000000000001"))
    assert info.value.http_status is not None and 400 <= info.value.http_status < 500
    assert info.value.status_code == 502


def test_http_instance_is_refused(fake_entra: FakeEntra, scn: Scenario, make_acquirer: AcquirerFactory) -> None:
    acquirer = make_acquirer(instance="http://login.example.test/")
    with pytest.raises(ConfigurationError, match="https"):
        acquirer.fetch(req(scn))


# -- throttling and outages --------------------------------------------------------------------------------


def test_429_then_success_honours_retry_after(
    fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario, acquirer: Acquirer
) -> None:
    fake_entra.faults.rate_limit("token", retry_after=1, times=1)
    started, real = fake_clock.monotonic(), time.monotonic()
    token = acquirer.fetch(req(scn))
    assert fake_clock.monotonic() - started >= 1.0  # waited on the engine's clock ...
    assert time.monotonic() - real < 1.0  # ... which a test clock advances instead of sleeping
    assert fake_entra.decode(token.token)["aud"] == scn.api.app_id
    assert fake_entra.request_count("token") == 2


def test_429_on_t1_is_retried(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    fake_entra.faults.rate_limit("token", retry_after=0, times=1)
    token = acquirer.fetch(req(scn, "agent_app"))
    assert fake_entra.decode(token.token)["azp"] == scn.agent.app_id
    assert fake_entra.request_count("token") == 3  # T1 (429), T1, agent token


def test_persistent_429_gives_up(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    fake_entra.faults.rate_limit("token", retry_after=0)
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn))
    assert info.value.http_status == 429
    assert info.value.status_code == 503
    assert fake_entra.request_count("token") == 3  # 1 + token_request_retries (2)


def test_retry_after_beyond_the_budget_fails_fast(
    fake_entra: FakeEntra, scn: Scenario, make_acquirer: AcquirerFactory
) -> None:
    acquirer = make_acquirer(token_request_max_wait=0.5)
    fake_entra.faults.rate_limit("token", retry_after=30, times=1)
    started = time.monotonic()
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn))
    assert time.monotonic() - started < 5
    assert info.value.status_code == 503
    assert fake_entra.request_count("token") == 1


def test_no_retries_when_configured(fake_entra: FakeEntra, scn: Scenario, make_acquirer: AcquirerFactory) -> None:
    acquirer = make_acquirer(token_request_retries=0)
    fake_entra.faults.server_error("token", 500, times=1)
    with pytest.raises(TokenAcquisitionError):
        acquirer.fetch(req(scn))
    assert fake_entra.request_count("token") == 1


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_then_success(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer, status: int) -> None:
    fake_entra.faults.server_error("token", status, times=1)
    token = acquirer.fetch(req(scn))
    assert fake_entra.decode(token.token)["aud"] == scn.api.app_id
    assert fake_entra.request_count("token") == 2


def test_persistent_5xx(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    fake_entra.faults.server_error("token", 502)
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn))
    assert info.value.http_status == 502
    assert info.value.status_code == 503
    assert fake_entra.request_count("token") == 3


def test_outage_is_503(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    fake_entra.faults.outage("token")
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn))
    assert info.value.status_code == 503
    assert info.value.http_status is None
    assert fake_entra.request_count("token") == 3


def test_discovery_outage_is_503(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    fake_entra.faults.outage("discovery")
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn))
    assert info.value.status_code == 503
    fake_entra.faults.clear()
    assert acquirer.fetch(req(scn)).token  # recovers once Entra is back


def test_outage_then_recovery(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    fake_entra.faults.outage("token", times=1)
    assert acquirer.fetch(req(scn)).token
    assert fake_entra.request_count("token") == 2


@pytest.mark.parametrize("status", [200, 400, 500])
def test_garbage_bodies(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer, status: int) -> None:
    fake_entra.faults.garbage("token", status=status)
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn))
    assert info.value.status_code in (502, 503)


def test_oversized_answer(fake_entra: FakeEntra, scn: Scenario, acquirer: Acquirer) -> None:
    fake_entra.faults.set("token", status=200, body=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn))
    assert info.value.status_code == 503


def test_stale_app_token_is_served_during_an_outage(
    fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario, make_acquirer: AcquirerFactory
) -> None:
    """MSAL's fallback (a still-valid token past its refresh_on) works because transport errors reach it as
    ``requests`` errors."""
    tokens: list[str] = []

    def route(request: httpx2.Request) -> httpx2.Response:
        response = fake_entra.handle(request)
        if request.method == "POST" and not tokens:
            body = response.read()
            import json

            payload = json.loads(body)
            payload["refresh_in"] = 60
            tokens.append(payload["access_token"])
            return httpx2.Response(200, json=payload)
        return response

    acquirer = make_acquirer(transport=httpx2.MockTransport(route))
    first = acquirer.fetch(req(scn))
    assert first.refresh_on is not None
    assert first.refresh_on == pytest.approx(fake_clock.time() + 60, abs=2)
    fake_clock.advance(120)  # past refresh_on, far from expiry
    fake_entra.faults.outage("token")
    assert acquirer.fetch(req(scn)).token == first.token
