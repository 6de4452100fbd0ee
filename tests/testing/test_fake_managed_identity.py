"""The managed-identity endpoint in process, and its exchange token as a federated credential (no secret)."""

from __future__ import annotations

import httpx2
import pytest

from entra_mw.testing import App, FakeEntra, Scenario

from ._tok_support import claims_of, error_of, post

EXCHANGE = "api://AzureADTokenExchange"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def s(fake_entra: FakeEntra) -> Scenario:
    return fake_entra.quickstart()


def mi_token(fake: FakeEntra, resource: str = EXCHANGE, **params: str) -> httpx2.Response:
    with httpx2.Client(transport=fake.transport) as client:
        return client.get(
            "https://localhost/msi/token",
            params={"api-version": "2019-08-01", "resource": resource, **params},
            headers={"X-IDENTITY-HEADER": fake.identity_header},
        )


def cc(fake: FakeEntra, s: Scenario, app: App, assertion: str) -> httpx2.Response:
    return post(
        fake,
        s.tenant.tenant_id,
        {
            "grant_type": "client_credentials",
            "client_id": app.app_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": f"api://{s.api.app_id}/.default",
        },
    )


def test_identity_token_shapes(fake_entra: FakeEntra, s: Scenario) -> None:
    system = fake_entra.add_managed_identity(s.tenant, system_assigned=True)
    uami = fake_entra.add_managed_identity(s.tenant, display_name="uami")
    body = mi_token(fake_entra).json()
    claims = fake_entra.decode(body["access_token"])
    assert body["client_id"] == system.app_id
    assert int(body["expires_on"]) == claims["exp"]
    assert (claims["aud"], claims["sub"], claims["oid"], claims["idtyp"]) == (
        EXCHANGE,
        system.principal_id,
        system.principal_id,
        "app",
    )
    assert claims["azp"] == system.app_id
    for key, value in (
        ("client_id", uami.app_id),
        ("principal_id", uami.principal_id),
        ("object_id", uami.principal_id.upper()),
        ("mi_res_id", uami.mi_resource_id),
    ):
        answer = mi_token(fake_entra, **{key: value}).json()
        assert claims_of(answer["access_token"])["sub"] == uami.principal_id, key
    assert mi_token(fake_entra, client_id=uami.app_id, principal_id=uami.principal_id).status_code == 400
    graph = mi_token(fake_entra, resource="https://graph.microsoft.com/.default")
    assert claims_of(graph.json()["access_token"])["aud"] == "00000003-0000-0000-c000-000000000000"
    with pytest.raises(ValueError, match="system-assigned"):
        fake_entra.add_managed_identity(s.tenant, system_assigned=True)


def test_no_system_identity_and_no_header(fake_entra: FakeEntra, s: Scenario) -> None:
    assert mi_token(fake_entra).status_code == 400  # nothing registered
    with httpx2.Client(transport=fake_entra.transport) as client:
        bare = client.get("https://localhost/msi/token", params={"api-version": "2019-08-01", "resource": EXCHANGE})
    assert bare.status_code == 401
    assert bare.json() == {"statusCode": 401, "message": bare.json()["message"]}


def test_identity_token_is_a_federated_credential_for_apps_that_trust_it(fake_entra: FakeEntra, s: Scenario) -> None:
    identity = fake_entra.add_managed_identity(s.tenant, display_name="web-host")
    web = fake_entra.add_app(s.tenant, display_name="web")
    fake_entra.grant_app_roles(web, s.api, ["Weather.Read.All"])
    assertion = mi_token(fake_entra, client_id=identity.app_id).json()["access_token"]
    # not trusted yet
    assert error_of(cc(fake_entra, s, web, assertion)) == (401, "invalid_client", 700211)
    fic = fake_entra.trust_managed_identity(web, identity)
    assert fic.subject == identity.principal_id
    assert fic.issuer == f"https://login.microsoftonline.com/{s.tenant.tenant_id}/v2.0"
    response = cc(fake_entra, s, web, assertion)
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert (claims["azp"], claims["azpacr"], claims["roles"]) == (web.app_id, "2", ["Weather.Read.All"])
    # a token of the identity for another audience, or another identity's token, is refused
    wrong_aud = mi_token(fake_entra, resource=f"api://{s.api.app_id}", client_id=identity.app_id).json()
    assert error_of(cc(fake_entra, s, web, wrong_aud["access_token"]))[2] == 700212
    other = fake_entra.add_managed_identity(s.tenant, display_name="other")
    stranger = mi_token(fake_entra, client_id=other.app_id).json()["access_token"]
    assert error_of(cc(fake_entra, s, web, stranger)) == (401, "invalid_client", 700213)
    with pytest.raises(ValueError, match="managed identity"):
        fake_entra.trust_managed_identity(web, s.client)


def test_identities_cannot_sign_users_in_or_use_secrets(fake_entra: FakeEntra, s: Scenario) -> None:
    identity = fake_entra.add_managed_identity(s.tenant)
    with httpx2.Client(transport=fake_entra.transport) as client:
        page = client.get(
            f"https://login.microsoftonline.com/{s.tenant.tenant_id}/oauth2/v2.0/authorize",
            params={"client_id": identity.app_id, "response_type": "code", "redirect_uri": "https://x/cb"},
        )
    assert page.status_code == 400
    assert "AADSTS700016" in page.text
