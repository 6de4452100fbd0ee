"""FakeEntra answers as Entra does where clients look closely: the client-authentication claim, instance
discovery's cache host, the error for a scope the resource does not expose, and a CA bundle that keeps the
system's roots."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from typing import Any

import certifi
import httpx2
import msal
import pytest
import requests

from entra_mw.testing import FakeEntra, Scenario

from ._tok_support import EXCHANGE_SCOPE, cert_assertion, claims_of, error_of, post, t1, token_url

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LOGIN = "https://login.microsoftonline.com"


@pytest.fixture
def s(fake_entra: FakeEntra) -> Scenario:
    return fake_entra.quickstart()


# -- azpacr / appidacr: the credential actually used (ED access-tokens.md) ------------------------------------


def _cc(fake: FakeEntra, s: Scenario, client_id: str, scope: str, **cred: str) -> dict[str, Any]:
    form = {"grant_type": "client_credentials", "client_id": client_id, "scope": scope, **cred}
    response = post(fake, s.tenant.tenant_id, form)
    assert response.status_code == 200, response.text
    return claims_of(response.json()["access_token"])


def test_azpacr_is_the_credential_used_not_the_ones_registered(fake_entra: FakeEntra, s: Scenario) -> None:
    # The client holds both a secret and a certificate: each request's token says which one it used.
    key_pem, cert_pem = fake_entra.add_certificate(s.client)
    scope = f"{s.api.app_id}/.default"
    by_secret = _cc(fake_entra, s, s.client.app_id, scope, client_secret=s.client_secret)
    assertion = cert_assertion(key_pem, cert_pem, client_id=s.client.app_id, audience=token_url(s.tenant.tenant_id))
    by_cert = _cc(
        fake_entra, s, s.client.app_id, scope, client_assertion=assertion, client_assertion_type=ASSERTION_TYPE
    )
    assert by_secret["azpacr"] == "1"
    assert by_cert["azpacr"] == "2"


def test_appidacr_on_v1_tokens(fake_entra: FakeEntra, s: Scenario) -> None:
    v1_api = fake_entra.add_app(s.tenant, display_name="v1-api", access_token_version=1, app_roles=("Read",))
    fake_entra.grant_app_roles(s.client, v1_api, ["Read"])
    key_pem, cert_pem = fake_entra.add_certificate(s.client)
    assertion = cert_assertion(key_pem, cert_pem, client_id=s.client.app_id, audience=token_url(s.tenant.tenant_id))
    claims = _cc(
        fake_entra,
        s,
        s.client.app_id,
        f"{v1_api.app_id}/.default",
        client_assertion=assertion,
        client_assertion_type=ASSERTION_TYPE,
    )
    assert claims["ver"] == "1.0"
    assert claims["appidacr"] == "2"
    assert "azpacr" not in claims


def test_public_client_on_a_confidential_app_is_azpacr_0(fake_entra: FakeEntra, s: Scenario) -> None:
    # ROPC without a secret: the client did not authenticate, whatever it has registered.
    form = {
        "grant_type": "password",
        "client_id": s.client.app_id,
        "username": s.user.upn,
        "password": s.user_password,
        "scope": f"{s.api.app_id}/Weather.Read",
    }
    response = post(fake_entra, s.tenant.tenant_id, form)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["azpacr"] == "0"
    with_secret = post(fake_entra, s.tenant.tenant_id, {**form, "client_secret": s.client_secret})
    assert claims_of(with_secret.json()["access_token"])["azpacr"] == "1"


def test_federated_and_agent_assertions_are_azpacr_2(fake_entra: FakeEntra, s: Scenario) -> None:
    # The blueprint has a secret; its agent authenticates with T1 (a signed assertion).
    agent = _cc(
        fake_entra,
        s,
        s.agent.app_id,
        f"{s.api.app_id}/.default",
        client_assertion=t1(fake_entra, s),
        client_assertion_type=ASSERTION_TYPE,
    )
    assert agent["azpacr"] == "2"
    t1_claims = claims_of(t1(fake_entra, s))
    assert t1_claims["azpacr"] == "1"  # the blueprint asked for T1 with its secret
    obo = post(
        fake_entra,
        s.tenant.tenant_id,
        {
            "grant_type": JWT_BEARER,
            "requested_token_use": "on_behalf_of",
            "client_id": s.blueprint.app_id,
            "client_secret": s.blueprint_secret,
            "assertion": fake_entra.user_token(s.user, client=s.client, resource=s.blueprint, scopes=["access_agent"]),
            "scope": f"{s.api.app_id}/Weather.Read",
        },
    )
    assert claims_of(obo.json()["access_token"])["azpacr"] == "1"


def test_minted_tokens_can_state_the_credential(fake_entra: FakeEntra, s: Scenario) -> None:
    assert claims_of(fake_entra.app_token(s.client, resource=s.api))["azpacr"] == "1"  # registered: a secret
    assert claims_of(fake_entra.app_token(s.client, resource=s.api, azpacr="2"))["azpacr"] == "2"
    with pytest.raises(ValueError, match="azpacr"):
        fake_entra.app_token(s.client, resource=s.api, azpacr="3")


# -- instance discovery ---------------------------------------------------------------------------------------


def test_instance_discovery_prefers_login_windows_net_as_cache_host(fake_entra: FakeEntra, s: Scenario) -> None:
    with httpx2.Client(transport=fake_entra.transport) as client:
        doc = client.get(
            f"{LOGIN}/common/discovery/instance",
            params={
                "api-version": "1.1",
                "authorization_endpoint": f"{LOGIN}/{s.tenant.tenant_id}/oauth2/v2.0/authorize",
            },
        ).json()
    first = doc["metadata"][0]
    assert first["preferred_network"] == "login.microsoftonline.com"
    assert first["preferred_cache"] == "login.windows.net"
    assert set(first["aliases"]) >= {"login.microsoftonline.com", "login.windows.net", "sts.windows.net"}


def test_other_authority_hosts_cache_under_themselves() -> None:
    fake = FakeEntra(authority_host="login.example.test")
    with httpx2.Client(transport=fake.transport) as client:
        doc = client.get(
            "https://login.example.test/common/discovery/instance",
            params={"authorization_endpoint": "https://login.example.test/common/oauth2/v2.0/authorize"},
        ).json()
    assert doc["metadata"][0]["preferred_cache"] == "login.example.test"


# -- AADSTS65005: a scope the resource does not expose ------------------------------------------------------


def test_unknown_delegated_scope_is_aadsts65005(fake_entra: FakeEntra, s: Scenario) -> None:
    tid = s.tenant.tenant_id
    ropc = {
        "grant_type": "password",
        "client_id": s.client.app_id,
        "client_secret": s.client_secret,
        "username": s.user.upn,
        "password": s.user_password,
        "scope": f"{s.api.app_id}/Nope.Write",
    }
    response = post(fake_entra, tid, ropc)
    assert error_of(response) == (400, "invalid_client", 65005)
    assert "Nope.Write" in response.json()["error_description"]
    obo = {
        "grant_type": JWT_BEARER,
        "requested_token_use": "on_behalf_of",
        "client_id": s.blueprint.app_id,
        "client_secret": s.blueprint_secret,
        "assertion": fake_entra.user_token(s.user, client=s.client, resource=s.blueprint, scopes=["access_agent"]),
        "scope": f"api://{s.api.app_id}/Weather.Write",
    }
    assert error_of(post(fake_entra, tid, obo)) == (400, "invalid_client", 65005)


def test_syntax_errors_stay_aadsts70011(fake_entra: FakeEntra, s: Scenario) -> None:
    tid = s.tenant.tenant_id
    base = {"grant_type": "client_credentials", "client_id": s.client.app_id, "client_secret": s.client_secret}
    # client credentials without /.default, and an fmi_path request for the wrong scope
    assert error_of(post(fake_entra, tid, {**base, "scope": f"{s.api.app_id}/Weather.Read"}))[2] == 70011
    bp = {
        **base,
        "client_id": s.blueprint.app_id,
        "client_secret": s.blueprint_secret,
        "scope": f"{s.api.app_id}/.default",
        "fmi_path": s.agent.app_id,
    }
    assert error_of(post(fake_entra, tid, bp))[2] == 70011
    assert EXCHANGE_SCOPE.endswith("/.default")


# -- the CA bundle with the system's roots --------------------------------------------------------------------


@pytest.fixture
def served(fake_entra: FakeEntra) -> Iterator[Any]:
    with fake_entra.serve() as served:
        yield served


def _roots(path: str) -> list[bytes]:
    context = ssl.create_default_context(cafile=path)
    return [bytes(c) for c in context.get_ca_certs(binary_form=True)]


@pytest.mark.loopback
def test_ca_bundle_holds_the_system_roots_and_fakeentras_ca(served: Any) -> None:
    bundle = _roots(served.ca_bundle)
    system = _roots(certifi.where())
    fake_ca = _roots(served.ca_file)
    assert len(fake_ca) == 1
    assert fake_ca[0] in bundle
    assert set(system) <= set(bundle)
    assert len(bundle) == len(set(system)) + 1


@pytest.mark.loopback
def test_requests_ca_bundle_overrides_verify_and_the_bundle_still_trusts_fakeentra(
    served: Any, s: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{served.base_url}{s.tenant.tenant_id}/v2.0/.well-known/openid-configuration"
    # A proxy setup points REQUESTS_CA_BUNDLE at the system roots: requests then ignores a session's own
    # verify= (MSAL sets exactly that), and FakeEntra's CA is no longer trusted.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    with requests.Session() as session:
        session.verify = served.ca_file
        with pytest.raises(requests.exceptions.SSLError):
            session.get(url, timeout=10)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", served.ca_bundle)
    with requests.Session() as session:
        session.verify = served.ca_file
        assert session.get(url, timeout=10).json()["issuer"].endswith("/v2.0")


@pytest.mark.loopback
def test_msal_on_its_own_session_with_requests_ca_bundle(
    served: Any, s: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", served.ca_bundle)
    app = msal.ConfidentialClientApplication(
        s.client.app_id,
        client_credential=s.client_secret,
        authority=f"{served.base_url}{s.tenant.tenant_id}",
        instance_discovery=False,
        verify=certifi.where(),  # ignored by requests once REQUESTS_CA_BUNDLE is set
    )
    try:
        result = app.acquire_token_for_client([f"{s.api.app_id}/.default"])
    finally:
        app.http_client.close()
    assert "access_token" in result, result.get("error_description")


@pytest.mark.loopback
def test_ca_bundle_goes_with_the_server(fake_entra: FakeEntra) -> None:

    with fake_entra.serve() as served:
        bundle = served.ca_bundle
        assert os.path.isfile(bundle)
    assert not os.path.exists(bundle)
