"""Web sign-in and managed identity over real HTTPS, with unmodified clients: MSAL's authorization-code flow
(``initiate_auth_code_flow`` / ``acquire_token_by_auth_code_flow``) with a person's form posts over httpx2, MSAL's
``ManagedIdentityClient`` and azure-identity's ``ManagedIdentityCredential`` in an App Service style
environment, and the passwordless chain: managed identity → federated credential → the user's API token."""

from __future__ import annotations

import types
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import msal
import pytest
import requests
from msal.managed_identity import APP_SERVICE, get_managed_identity_source

from entra_mw import EntraAuth, EntraConfig, Principal
from entra_mw.testing import App, FakeEntra, Scenario, ServedFakeEntra

from ._browser import Browser, forms_of, redirect_params

pytestmark = pytest.mark.loopback

EXCHANGE = "api://AzureADTokenExchange"
WEB_REDIRECT = "https://webapp.example/auth/callback"


@dataclass
class Site:
    """A served FakeEntra on the system clock (MSAL and azure-identity compare times with ``time.time()``)."""

    fake: FakeEntra
    s: Scenario
    served: ServedFakeEntra
    closers: list[Any] = field(default_factory=list)

    @property
    def tid(self) -> str:
        return self.s.tenant.tenant_id

    @property
    def api_scope(self) -> str:
        return f"api://{self.s.api.app_id}/Weather.Read"

    def browser(self) -> Browser:
        client = httpx2.Client(verify=self.served.ssl_context())
        self.closers.append(client.close)
        return Browser(client)

    def validate(self, token: str) -> Principal:
        auth = EntraAuth(
            EntraConfig(tenant_id=self.tid, client_id=self.s.api.app_id, instance=self.served.base_url),
            verify=self.served.ca_file,
        )
        self.closers.append(auth.close)
        return auth.validate(token)

    def msal_app(self, cls: Any, client_id: str, **kw: Any) -> Any:
        app = cls(client_id, authority=self.served.authority(self.tid), instance_discovery=False, **kw)
        self.closers.append(app.http_client.close)
        return app


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    fake = FakeEntra()
    s = fake.quickstart()
    served = fake.serve()
    # MSAL and azure-identity use requests, which trusts REQUESTS_CA_BUNDLE: the bundle keeps the system roots.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", served.ca_bundle)
    world = Site(fake, s, served)
    try:
        yield world
    finally:
        for close in reversed(world.closers):
            close()
        fake.close()


def person_signs_in(site: Site, auth_uri: str, *, consent: bool = True) -> dict[str, str]:
    """What the browser brings back to the redirect URI after alice signs in (and consents)."""
    browser = site.browser()
    page = browser.open(auth_uri)
    assert page.status_code == 200, page.text
    answer = browser.sign_in(page, site.s.user.upn, site.s.user_password)
    if consent:
        answer = browser.consent(answer)
    if answer.status_code == 200:  # response_mode=form_post: the page posts these fields to the redirect URI
        forms, _ = forms_of(answer)
        return forms[0].fields
    return redirect_params(answer)


def test_msal_confidential_auth_code_flow(site: Site) -> None:
    web = site.fake.add_app(site.s.tenant, display_name="weather-web", redirect_uris=[WEB_REDIRECT])
    secret = site.fake.add_secret(web)
    app = site.msal_app(msal.ConfidentialClientApplication, web.app_id, client_credential=secret)
    flow = app.initiate_auth_code_flow(
        [site.api_scope], redirect_uri=WEB_REDIRECT, login_hint=site.s.user.upn, response_mode="form_post"
    )
    assert flow["auth_uri"].startswith(site.served.authorize_endpoint(site.tid))
    result = app.acquire_token_by_auth_code_flow(flow, person_signs_in(site, flow["auth_uri"]))
    assert "access_token" in result, result.get("error_description")
    principal = site.validate(result["access_token"])
    assert principal.oid == site.s.user.object_id
    assert principal.scopes == frozenset({"Weather.Read"})
    assert principal.client_id == web.app_id
    claims = result["id_token_claims"]  # MSAL checked the nonce against its flow
    assert claims["aud"] == web.app_id
    assert claims["preferred_username"] == site.s.user.upn
    assert claims["tid"] == site.tid
    assert claims["iss"] == f"https://login.microsoftonline.com/{site.tid}/v2.0"
    # MSAL cached the account; a silent call redeems the refresh token
    account = app.get_accounts()[0]
    assert account["username"] == site.s.user.upn
    again = app.acquire_token_silent([site.api_scope], account=account, force_refresh=True)
    assert again is not None and "access_token" in again
    assert site.fake.request_count("token:refresh_token") == 1


def test_msal_public_client_auth_code_flow_with_pkce(site: Site) -> None:
    cli = site.fake.add_public_client(site.s.tenant, redirect_uris=["http://localhost"])
    app = site.msal_app(msal.PublicClientApplication, cli.app_id)
    flow = app.initiate_auth_code_flow(
        [site.api_scope], redirect_uri="http://localhost:8765", response_mode="form_post"
    )
    assert "code_challenge=" in flow["auth_uri"]
    result = app.acquire_token_by_auth_code_flow(flow, person_signs_in(site, flow["auth_uri"]))
    assert "access_token" in result, result.get("error_description")
    assert site.validate(result["access_token"]).claims["azpacr"] == "0"


def test_msal_refuses_a_tampered_state_and_fakeentra_a_replayed_code(site: Site) -> None:
    web = site.fake.add_app(site.s.tenant, display_name="weather-web", redirect_uris=[WEB_REDIRECT])
    secret = site.fake.add_secret(web)
    app = site.msal_app(msal.ConfidentialClientApplication, web.app_id, client_credential=secret)
    flow = app.initiate_auth_code_flow([site.api_scope], redirect_uri=WEB_REDIRECT, response_mode="form_post")
    response = person_signs_in(site, flow["auth_uri"])
    with pytest.raises(ValueError, match="state"):
        app.acquire_token_by_auth_code_flow(flow, {**response, "state": "tampered"})
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, response)
    replay = site.msal_app(msal.ConfidentialClientApplication, web.app_id, client_credential=secret)
    replayed = replay.acquire_token_by_auth_code_flow(flow, response)
    assert replayed["error"] == "invalid_grant"
    assert replayed["error_codes"] == [54005]


def test_wrong_redirect_uri_is_shown_not_followed(site: Site) -> None:
    web = site.fake.add_app(site.s.tenant, display_name="weather-web", redirect_uris=[WEB_REDIRECT])
    app = site.msal_app(msal.ConfidentialClientApplication, web.app_id, client_credential=site.fake.add_secret(web))
    flow = app.initiate_auth_code_flow(
        [site.api_scope], redirect_uri="https://attacker.example/cb", response_mode="form_post"
    )
    page = site.browser().open(flow["auth_uri"])
    assert page.status_code == 400
    assert "AADSTS50011" in page.text
    assert "location" not in page.headers


# -- managed identity ---------------------------------------------------------------------------------------------


@pytest.fixture
def app_service(site: Site, monkeypatch: pytest.MonkeyPatch) -> tuple[App, App]:
    """An App Service host with a system-assigned and a user-assigned identity (its two variables set)."""
    system = site.fake.add_managed_identity(site.s.tenant, display_name="web-host", system_assigned=True)
    user_assigned = site.fake.add_managed_identity(site.s.tenant, display_name="shared-uami")
    for name, value in site.served.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    assert site.served.managed_identity_env()["IDENTITY_ENDPOINT"] == site.served.managed_identity_endpoint
    return system, user_assigned


def _mi_client(site: Site, identity: Any) -> Any:
    session = requests.Session()
    site.closers.append(session.close)
    return msal.ManagedIdentityClient(identity, http_client=session)


def test_msal_managed_identity_client(site: Site, app_service: tuple[App, App]) -> None:
    system, user_assigned = app_service
    assert get_managed_identity_source() == APP_SERVICE
    sys_result = _mi_client(site, msal.SystemAssignedManagedIdentity()).acquire_token_for_client(resource=EXCHANGE)
    assert "access_token" in sys_result, sys_result
    claims = site.fake.decode(sys_result["access_token"])
    assert claims["aud"] == EXCHANGE
    assert claims["sub"] == system.principal_id
    assert claims["idtyp"] == "app"
    assert claims["azpacr"] == "2"
    for identity in (
        msal.UserAssignedManagedIdentity(client_id=user_assigned.app_id),
        msal.UserAssignedManagedIdentity(object_id=user_assigned.principal_id),
        msal.UserAssignedManagedIdentity(resource_id=user_assigned.mi_resource_id),
    ):
        result = _mi_client(site, identity).acquire_token_for_client(resource=f"api://{site.s.api.app_id}")
        assert "access_token" in result, result
        assert site.fake.decode(result["access_token"])["sub"] == user_assigned.principal_id


def test_azure_identity_managed_identity_credential(site: Site, app_service: tuple[App, App]) -> None:
    azid: types.ModuleType = pytest.importorskip("azure.identity")
    system, user_assigned = app_service
    site.fake.grant_app_roles(user_assigned, site.s.api, ["Weather.Read.All"])
    cred = azid.ManagedIdentityCredential(client_id=user_assigned.app_id)
    try:
        token = cred.get_token(f"api://{site.s.api.app_id}/.default").token
    finally:
        cred.close()
    principal = site.validate(token)
    assert principal.is_app
    assert principal.roles == frozenset({"Weather.Read.All"})
    assert principal.oid == user_assigned.principal_id
    system_cred = azid.ManagedIdentityCredential()
    try:
        exchange = system_cred.get_token(EXCHANGE + "/.default").token
    finally:
        system_cred.close()
    assert site.fake.decode(exchange)["sub"] == system.principal_id


def test_managed_identity_endpoint_refusals(site: Site, app_service: tuple[App, App]) -> None:
    url = site.served.managed_identity_endpoint
    header = {"X-IDENTITY-HEADER": site.fake.identity_header}
    with requests.Session() as session:
        cases = [
            (session.get(url, params={"api-version": "2019-08-01", "resource": EXCHANGE}), 401),
            (
                session.get(
                    url,
                    params={"api-version": "2019-08-01", "resource": EXCHANGE},
                    headers={"X-IDENTITY-HEADER": "guess"},
                ),
                401,
            ),
            (session.get(url, params={"api-version": "2017-09-01", "resource": EXCHANGE}, headers=header), 400),
            (session.get(url, params={"api-version": "2019-08-01"}, headers=header), 400),
            (session.get(url, params={"api-version": "2019-08-01", "resource": "api://nowhere"}, headers=header), 400),
            (
                session.get(
                    url,
                    params={
                        "api-version": "2019-08-01",
                        "resource": EXCHANGE,
                        "client_id": "00000000-0000-0000-0000-000000000000",
                    },
                    headers=header,
                ),
                400,
            ),
            (session.post(url, params={"api-version": "2019-08-01", "resource": EXCHANGE}, headers=header), 405),
        ]
        for response, status in cases:
            assert response.status_code == status, response.text
            assert response.json()["statusCode"] == status
        ok = session.get(url, params={"api-version": "2019-08-01", "resource": EXCHANGE}, headers=header).json()
    assert set(ok) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert ok["resource"] == EXCHANGE
    assert ok["token_type"] == "Bearer"
    assert ok["expires_on"].isdigit()
    assert site.fake.request_count("managed_identity") == len(cases) + 1


def test_passwordless_web_sign_in_managed_identity_as_federated_credential(
    site: Site, app_service: tuple[App, App]
) -> None:
    """The reference scenario's chain with no secret anywhere: the web app's credential is its host's managed
    identity token for api://AzureADTokenExchange, which Entra accepts because the app trusts that identity."""
    system, _ = app_service
    web = site.fake.add_app(site.s.tenant, display_name="weather-web", redirect_uris=[WEB_REDIRECT])
    site.fake.trust_managed_identity(web, system)
    assert web.secrets == [] and web.certificates == []
    mi = _mi_client(site, msal.SystemAssignedManagedIdentity())

    def assertion() -> str:
        token: str = mi.acquire_token_for_client(resource=EXCHANGE)["access_token"]
        return token

    app = site.msal_app(
        msal.ConfidentialClientApplication, web.app_id, client_credential={"client_assertion": assertion}
    )
    flow = app.initiate_auth_code_flow([site.api_scope], redirect_uri=WEB_REDIRECT, response_mode="form_post")
    result = app.acquire_token_by_auth_code_flow(flow, person_signs_in(site, flow["auth_uri"]))
    assert "access_token" in result, result.get("error_description")
    principal = site.validate(result["access_token"])
    assert principal.oid == site.s.user.object_id
    assert principal.client_id == web.app_id
    assert principal.claims["azpacr"] == "2"  # the app authenticated with a signed assertion
    # an identity the app does not trust is refused
    other = site.fake.add_managed_identity(site.s.tenant, display_name="stranger")
    stranger = _mi_client(site, msal.UserAssignedManagedIdentity(client_id=other.app_id))
    refused = site.msal_app(
        msal.ConfidentialClientApplication,
        web.app_id,
        client_credential={
            "client_assertion": lambda: stranger.acquire_token_for_client(resource=EXCHANGE)["access_token"]
        },
    ).acquire_token_for_client([f"api://{site.s.api.app_id}/.default"])
    assert refused["error"] == "invalid_client"
    assert refused["error_codes"] == [700213]


def test_emulator_facts(site: Site) -> None:
    assert [u.upn for u in site.fake.test_users] == [site.s.user.upn]
    assert site.fake.test_users[0].password == site.s.user_password
    assert site.served.authorize_endpoint(site.tid) == f"{site.served.base_url}{site.tid}/oauth2/v2.0/authorize"
    assert site.served.logout_endpoint("common").endswith("/common/oauth2/v2.0/logout")
    parsed = urllib.parse.urlsplit(site.served.managed_identity_endpoint)
    assert (parsed.scheme, parsed.path) == ("https", "/msi/token")
