"""Errors with the official status mapping (spec §1.5) and nothing leaked; the loopback-only caller check
(spec §1.1); Entra outages; logs free of tokens and secrets."""

from __future__ import annotations

import logging

import httpx2
import pytest

from entra_mw import EntraConfig
from entra_mw.sidecar import SidecarOptions, create_app
from entra_mw.sidecar._app import is_local_client
from entra_mw.testing import FakeEntra, Scenario, ServedFakeEntra

from ._support import sidecar_env, user_token
from .conftest import StartSidecar

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]


def test_entra_refusal_is_401_with_its_message(start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario) -> None:
    secret = "not-the-secret-value-1234"
    sidecar = start_sidecar(AzureAd__ClientCredentials__0__ClientSecret=secret)
    response = sidecar.get("/AuthorizationHeaderUnauthenticated/graph")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["title"] == "Unauthorized"
    assert "AADSTS7000215" in body["detail"]  # invalid client secret
    assert secret not in response.text


def test_unknown_agent_is_401(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    response = client.get(
        "/AuthorizationHeader/weather?AgentIdentity=0f0f0f0f-1111-4222-8333-444455556666",
        headers={"Authorization": f"Bearer {tc}"},
    )
    assert response.status_code == 401
    assert "AADSTS" in response.json()["detail"]


def test_entra_outage_is_503_with_retry_after(start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario) -> None:
    sidecar = start_sidecar()
    rules = fake.faults.server_error("token")
    try:
        response = sidecar.get("/AuthorizationHeaderUnauthenticated/graph")
    finally:
        fake.faults.remove(rules)
    assert response.status_code == 503
    assert response.json()["title"] == "Service Unavailable"
    assert "retry-after" in response.headers


def test_configuration_error_is_a_generic_500(start_sidecar: StartSidecar, scn: Scenario) -> None:
    # An app API whose scope cannot be an app scope (IDW10404): the operator's mistake, not the caller's.
    sidecar = start_sidecar(
        **{
            "DownstreamApis__bad__BaseUrl": "https://api.example/",
            "DownstreamApis__bad__Scopes__0": "User.Read",
            "DownstreamApis__bad__RequestAppToken": "true",
        }
    )
    response = sidecar.get("/AuthorizationHeaderUnauthenticated/bad")
    assert response.status_code == 500
    assert response.json() == {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.6.1",
        "title": "An error occurred while processing your request.",
        "status": 500,
        "detail": "An unexpected error occurred.",
    }


def test_no_token_or_secret_in_logs(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="entra_mw")
    tc = user_token(fake, scn)
    headers = {"Authorization": f"Bearer {tc}"}
    issued = client.get(f"/AuthorizationHeader/weather?AgentIdentity={scn.agent.app_id}", headers=headers)
    client.get("/AuthorizationHeader/weather?optionsOverride.BaseUrl=x", headers=headers)
    client.get("/AuthorizationHeader/weather?AgentUserId=nope", headers=headers)
    client.get("/Validate", headers={"Authorization": f"Bearer {tc[:-3]}xyz"})
    issued_token = issued.json()["authorizationHeader"].split(" ", 1)[1]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "optionsOverride.BaseUrl ignored" in text  # the sidecar's own lines were captured
    for secret in (tc, issued_token, scn.blueprint_secret, tc.split(".")[2], issued_token.split(".")[2]):
        assert secret not in text


@pytest.mark.parametrize(
    ("client_addr", "local"),
    [
        (("127.0.0.1", 1), True),
        (("127.8.9.10", 1), True),
        (("::1", 1), True),
        (("::ffff:127.0.0.1", 1), True),
        (None, True),
        (("", 0), True),
        (("10.0.0.5", 1), False),
        (("::ffff:10.0.0.5", 1), False),
        (("fe80::1", 1), False),
        (("192.168.1.20", 1), False),
        (("not-an-ip", 1), False),
    ],
)
def test_is_local_client(client_addr: tuple[str, int] | None, local: bool) -> None:
    assert is_local_client(client_addr) is local


def _app(served: ServedFakeEntra, scn: Scenario, **extra: str) -> object:
    env = sidecar_env(served, scn, "http://127.0.0.1:9", **extra)
    return create_app(EntraConfig.from_env(env), environ=env)


@pytest.mark.anyio
async def test_non_loopback_callers_are_refused_outside_development(served: ServedFakeEntra, scn: Scenario) -> None:
    # The caller's socket address decides (a real socket here only ever has a loopback peer, so the ASGI
    # scope carries a pod-network address instead).
    app = _app(served, scn)
    transport = httpx2.ASGITransport(app=app, client=("10.244.1.7", 50123))  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport, base_url="http://sidecar") as remote:
        for path in ("/Validate", "/AuthorizationHeaderUnauthenticated/graph", "/openapi/v1.json"):
            response = await remote.get(path)
            assert response.status_code == 403
            assert response.content == b""
        assert (await remote.post("/DownstreamApiUnauthenticated/graph")).status_code == 403
        healthz = await remote.get("/HealthZ")
        assert healthz.status_code == 200
        assert healthz.text == "Healthy"


@pytest.mark.anyio
async def test_development_accepts_any_caller(served: ServedFakeEntra, scn: Scenario) -> None:
    app = _app(served, scn, ASPNETCORE_ENVIRONMENT="Development")
    assert app.state.sidecar_options == SidecarOptions(development=True)  # type: ignore[attr-defined]
    transport = httpx2.ASGITransport(app=app, client=("10.244.1.7", 50123))  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport, base_url="http://sidecar") as remote:
        assert (await remote.get("/Validate")).status_code == 401
        assert (await remote.get("/openapi/v1.json")).status_code == 200


def test_sidecar_settings_are_parsed(served: ServedFakeEntra, scn: Scenario) -> None:
    env = sidecar_env(
        served,
        scn,
        "http://127.0.0.1:9",
        Sidecar__AllowOverrides__GetAuthorizationHeader="False",
        sidecar__allowoverrides__callDownstreamApiUnauthenticated="TRUE",
        Sidecar__AllowOutboundRedirects="true",
    )
    options = SidecarOptions.from_config(EntraConfig.from_env(env), env)
    assert options == SidecarOptions(
        get_authorization_header=False,
        call_downstream_api_unauthenticated=True,
        allow_outbound_redirects=True,
    )
    from entra_mw import ConfigurationError

    bad = {**env, "Sidecar__AllowOutboundRedirects": "yes please"}
    with pytest.raises(ConfigurationError, match="Sidecar__AllowOutboundRedirects"):
        SidecarOptions.from_config(EntraConfig.from_env(bad), bad)


@pytest.mark.anyio
async def test_compat_10_host_filtering_instead_of_loopback(served: ServedFakeEntra, scn: Scenario) -> None:
    # A deployment written for 1.0.x: another container calls http://sidecar:5000 with Host: localhost.
    app = _app(served, scn, ENTRA_MW_SIDECAR_COMPAT="1.0")
    transport = httpx2.ASGITransport(app=app, client=("172.18.0.3", 40000))  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport, base_url="http://sidecar:5000") as other_container:
        assert (await other_container.get("/Validate")).status_code == 400  # Host: sidecar:5000
        local = await other_container.get("/Validate", headers={"Host": "localhost"})
        assert local.status_code == 401
        assert (await other_container.get("/healthz")).status_code == 200
    app = _app(served, scn, ENTRA_MW_SIDECAR_COMPAT="1.0", AllowedHosts="*")
    transport = httpx2.ASGITransport(app=app, client=("172.18.0.3", 40000))  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport, base_url="http://sidecar:5000") as other_container:
        assert (await other_container.get("/Validate")).status_code == 401


def test_compat_10_applies_agent_parameters_everywhere(
    start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario
) -> None:
    sidecar = start_sidecar(ENTRA_MW_SIDECAR_COMPAT="1.0")
    sidecar.headers["Host"] = "localhost:5000"  # 1.0.x filters on the Host header
    response = sidecar.get(f"/AuthorizationHeaderUnauthenticated/graph?AgentIdentity={scn.agent.app_id}")
    assert response.status_code == 200
    assert fake.decode(response.json()["authorizationHeader"][7:])["azp"] == scn.agent.app_id
    explicit = start_sidecar(
        ENTRA_MW_SIDECAR_COMPAT="1.0", Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated="false"
    )
    response = explicit.get(
        f"/AuthorizationHeaderUnauthenticated/graph?AgentIdentity={scn.agent.app_id}", headers={"Host": "localhost"}
    )
    assert fake.decode(response.json()["authorizationHeader"][7:])["azp"] == scn.blueprint.app_id


def test_compat_setting_is_checked(served: ServedFakeEntra, scn: Scenario) -> None:
    from entra_mw import ConfigurationError

    env = sidecar_env(served, scn, "http://127.0.0.1:9", ENTRA_MW_SIDECAR_COMPAT="2.0")
    with pytest.raises(ConfigurationError, match="ENTRA_MW_SIDECAR_COMPAT"):
        SidecarOptions.from_config(EntraConfig.from_env(env), env)
