"""Unmodified MSAL Python against FakeEntra: every flow entra_mw relies on, and its error paths."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx2
import msal
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from entra_mw.testing import FakeEntra, Scenario

from ._tok_support import EXCHANGE_SCOPE, MsalHttp, cert_assertion

AUTHORITY = "https://login.microsoftonline.com/"


@pytest.fixture
def s(fake_entra: FakeEntra) -> Scenario:
    return fake_entra.quickstart()


@pytest.fixture
def http(fake_entra: FakeEntra) -> Iterator[MsalHttp]:
    adapter = MsalHttp(httpx2.Client(transport=fake_entra.transport))
    yield adapter
    adapter.close()


def cca(s: Scenario, http: MsalHttp, client_id: str, credential: Any, **kw: Any) -> Any:
    # A fresh application per use: MSAL's HTTP cache replays identical 400 answers for 60 s (spec §5.5).
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential,
        authority=AUTHORITY + s.tenant.tenant_id,
        http_client=http,
        **kw,
    )


def blueprint(s: Scenario, http: MsalHttp) -> Any:
    return cca(s, http, s.blueprint.app_id, s.blueprint_secret)


def agent_app(s: Scenario, http: MsalHttp) -> Any:
    bp = blueprint(s, http)

    def t1(context: dict[str, Any]) -> str:
        # MSAL passes {"client_id", "token_endpoint", ...}; the blueprint caches T1 per fmi_path (spec §3.8).
        result = bp.acquire_token_for_client([EXCHANGE_SCOPE], fmi_path=context["client_id"])
        token: str = result["access_token"]
        return token

    return cca(s, http, s.agent.app_id, {"client_assertion": t1})


def alice_for_blueprint(s: Scenario, http: MsalHttp) -> str:
    client = cca(s, http, s.client.app_id, s.client_secret)
    result = client.acquire_token_by_username_password(
        s.user.upn, s.user_password, [f"{s.blueprint.app_id}/access_agent"]
    )
    assert "access_token" in result, result.get("error_description")
    token: str = result["access_token"]
    return token


def assert_error(result: dict[str, Any], error: str, code: int) -> None:
    assert "access_token" not in result
    assert result["error"] == error, result.get("error_description")
    assert result["error_codes"] == [code]
    assert result["error_description"].startswith(f"AADSTS{code}: ")


# -- client credentials
# -----------------------------------------------------------------------------------------


def test_secret_and_cache(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    app = cca(s, http, s.client.app_id, s.client_secret)
    first = app.acquire_token_for_client([f"{s.api.app_id}/.default"])
    assert first["token_source"] == "identity_provider"
    assert fake_entra.decode(first["access_token"])["roles"] == ["Weather.Read.All"]
    again = app.acquire_token_for_client([f"{s.api.app_id}/.default"])
    assert again["token_source"] == "cache"
    assert again["access_token"] == first["access_token"]
    sent = http.posts[-1]
    assert sent["data"]["client_info"] == 1
    assert sent["data"]["client_secret"] == s.client_secret
    assert fake_entra.request_count("token:client_credentials") == 1


def test_certificate_with_thumbprint(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    key, cert_pem = fake_entra.add_certificate(s.client)
    thumbprint = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA1()).hex()
    app = cca(s, http, s.client.app_id, {"private_key": key.decode(), "thumbprint": thumbprint})
    result = app.acquire_token_for_client([f"{s.api.app_id}/.default"])
    assert "access_token" in result, result.get("error_description")
    assert "client_secret" not in http.posts[-1]["data"]


def test_certificate_with_public_certificate(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    key, cert_pem = fake_entra.add_certificate(s.client)
    app = cca(s, http, s.client.app_id, {"private_key": key.decode(), "public_certificate": cert_pem.decode()})
    result = app.acquire_token_for_client([f"{s.api.app_id}/.default"])
    assert "access_token" in result, result.get("error_description")  # PS256 + x5t#S256 + x5c


def test_unregistered_certificate(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    key, cert_pem = fake_entra.add_certificate(s.api)
    app = cca(s, http, s.client.app_id, {"private_key": key.decode(), "public_certificate": cert_pem.decode()})
    assert_error(app.acquire_token_for_client([f"{s.api.app_id}/.default"]), "invalid_client", 700027)


def test_assertion_callable_with_context(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    key, cert_pem = fake_entra.add_certificate(s.client)
    seen: list[dict[str, Any]] = []

    def make(context: dict[str, Any]) -> str:
        seen.append(context)
        return cert_assertion(key, cert_pem, client_id=context["client_id"], audience=context["token_endpoint"])

    app = cca(s, http, s.client.app_id, {"client_assertion": make})
    result = app.acquire_token_for_client([f"{s.api.app_id}/.default"])
    assert "access_token" in result, result.get("error_description")
    assert seen
    assert seen[0]["token_endpoint"].endswith("/oauth2/v2.0/token")


def test_client_credentials_errors(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    assert_error(
        cca(s, http, s.client.app_id, "wrong").acquire_token_for_client([f"{s.api.app_id}/.default"]),
        "invalid_client",
        7000215,
    )
    app = cca(s, http, s.client.app_id, s.client_secret)
    assert_error(app.acquire_token_for_client(["api://nothing/.default"]), "invalid_resource", 500011)
    assert_error(app.acquire_token_for_client([f"{s.api.app_id}/Weather.Read"]), "invalid_scope", 70011)
    stranger = cca(s, http, "00000000-0000-0000-0000-00000000abcd", "x")
    assert_error(stranger.acquire_token_for_client([f"{s.api.app_id}/.default"]), "unauthorized_client", 700016)


def test_unknown_tenant_fails_discovery(s: Scenario, http: MsalHttp) -> None:
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        msal.ConfidentialClientApplication(
            s.client.app_id, client_credential="x", authority=AUTHORITY + "nowhere.example", http_client=http
        )


# -- agent identities
# -------------------------------------------------------------------------------------------


def test_fmi_path_t1_is_cached_per_agent(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    bp = blueprint(s, http)
    first = bp.acquire_token_for_client([EXCHANGE_SCOPE], fmi_path=s.agent.app_id)
    claims = fake_entra.decode(first["access_token"])
    assert claims["aud"] == "api://AzureADTokenExchange"
    assert claims["sub"].endswith(s.agent.app_id)
    assert http.posts[-1]["data"]["fmi_path"] == s.agent.app_id
    assert bp.acquire_token_for_client([EXCHANGE_SCOPE], fmi_path=s.agent.app_id)["token_source"] == "cache"
    other = fake_entra.add_agent_identity(s.blueprint, display_name="second")
    second = bp.acquire_token_for_client([EXCHANGE_SCOPE], fmi_path=other.app_id)
    assert second["access_token"] != first["access_token"]


def test_autonomous_agent(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    result = agent_app(s, http).acquire_token_for_client([f"{s.api.app_id}/.default"])
    assert "access_token" in result, result.get("error_description")
    claims = fake_entra.decode(result["access_token"])
    assert claims["azp"] == s.agent.app_id
    assert claims["xms_par_app_azp"] == s.blueprint.app_id
    assert claims["roles"] == ["Weather.Read.All"]


def test_agent_with_wrong_t1(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    other = fake_entra.add_agent_identity(s.blueprint, display_name="other")
    bp = blueprint(s, http)
    app = cca(
        s,
        http,
        s.agent.app_id,
        {
            "client_assertion": lambda: bp.acquire_token_for_client([EXCHANGE_SCOPE], fmi_path=other.app_id)[
                "access_token"
            ]
        },
    )
    assert_error(app.acquire_token_for_client([f"{s.api.app_id}/.default"]), "invalid_client", 7002137)


def test_agent_user_by_username_and_object_id(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    agent = agent_app(s, http)
    t2 = agent.acquire_token_for_client([EXCHANGE_SCOPE])["access_token"]
    scopes = [f"{s.api.app_id}/Weather.Read"]
    by_upn = agent.acquire_token_by_user_federated_identity_credential(scopes, t2, username=s.agent_user.upn)
    assert "access_token" in by_upn, by_upn.get("error_description")
    claims = fake_entra.decode(by_upn["access_token"])
    assert claims["oid"] == s.agent_user.object_id
    assert "13" in claims["xms_sub_fct"].split()
    assert by_upn["id_token_claims"]["oid"] == s.agent_user.object_id
    by_oid = agent.acquire_token_by_user_federated_identity_credential(
        scopes, t2, user_object_id=s.agent_user.object_id
    )
    assert fake_entra.decode(by_oid["access_token"])["oid"] == s.agent_user.object_id
    assert http.posts[-1]["data"]["user_id"] == s.agent_user.object_id
    # the account was stored from client_info, so silent acquisition works afterwards
    accounts = agent.get_accounts(username=s.agent_user.upn)
    assert accounts
    assert agent.acquire_token_silent(scopes, account=accounts[0])["access_token"]
    assert fake_entra.request_count("token:user_fic") == 2


def test_agent_user_errors(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    agent = agent_app(s, http)
    t1 = blueprint(s, http).acquire_token_for_client([EXCHANGE_SCOPE], fmi_path=s.agent.app_id)["access_token"]
    result = agent.acquire_token_by_user_federated_identity_credential(
        [f"{s.api.app_id}/Weather.Read"], t1, username=s.agent_user.upn
    )
    assert_error(result, "invalid_grant", 50013)
    t2 = agent.acquire_token_for_client([EXCHANGE_SCOPE])["access_token"]
    result = agent.acquire_token_by_user_federated_identity_credential(
        [f"{s.api.app_id}/Weather.Read"], t2, username="ghost@contoso.onmicrosoft.com"
    )
    assert_error(result, "invalid_grant", 50034)


# -- on-behalf-of
# --------------------------------------------------------------------------------------------------


def test_plain_obo_and_refresh(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    tc = alice_for_blueprint(s, http)
    middle = cca(s, http, s.blueprint.app_id, s.blueprint_secret)
    result = middle.acquire_token_on_behalf_of(tc, [f"{s.api.app_id}/Weather.Read"])
    assert "access_token" in result, result.get("error_description")
    assert set(http.posts[-1]["data"]["scope"].split()) >= {"openid", "profile", "offline_access"}
    assert fake_entra.decode(result["access_token"])["scp"] == "Weather.Read"
    assert result["id_token_claims"]["preferred_username"] == s.user.upn
    refreshed = middle.acquire_token_by_refresh_token(result["refresh_token"], [f"{s.api.app_id}/Weather.Read"])
    assert "access_token" in refreshed, refreshed.get("error_description")
    assert fake_entra.request_count("token:refresh_token") == 1
    assert_error(
        middle.acquire_token_by_refresh_token("not-a-refresh-token", [f"{s.api.app_id}/Weather.Read"]),
        "invalid_grant",
        70000,
    )


def test_agent_obo(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    tc = alice_for_blueprint(s, http)
    result = agent_app(s, http).acquire_token_on_behalf_of(tc, [f"{s.api.app_id}/Weather.Read"])
    assert "access_token" in result, result.get("error_description")
    claims = fake_entra.decode(result["access_token"])
    assert claims["azp"] == s.agent.app_id
    assert claims["oid"] == s.user.object_id
    assert claims["xms_par_app_azp"] == s.blueprint.app_id


def test_agent_obo_with_a_token_for_the_api(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    tc = fake_entra.user_token(s.user, client=s.client, resource=s.api)
    result = agent_app(s, http).acquire_token_on_behalf_of(tc, [f"{s.api.app_id}/Weather.Read"])
    assert_error(result, "invalid_grant", 50013)


def test_obo_consent_required(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    mid = fake_entra.add_app(s.tenant, display_name="middle", scopes=("access",))
    secret = fake_entra.add_secret(mid)
    tc = fake_entra.user_token(s.user, client=s.client, resource=mid, scopes=["access"])
    result = cca(s, http, mid.app_id, secret).acquire_token_on_behalf_of(tc, [f"{s.api.app_id}/Weather.Read"])
    assert_error(result, "invalid_grant", 65001)
    assert result["suberror"] == "consent_required"


def test_obo_claims_challenge_round_trip(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    bob = fake_entra.add_user(s.tenant, upn="bob@contoso.onmicrosoft.com", mfa_required=True)
    tc = fake_entra.user_token(bob, client=s.client, resource=s.blueprint, scopes=["access_agent"])
    middle = cca(s, http, s.blueprint.app_id, s.blueprint_secret)
    first = middle.acquire_token_on_behalf_of(tc, [f"{s.api.app_id}/Weather.Read"])
    assert_error(first, "interaction_required", 50079)
    assert first["claims"].startswith("{")
    second = middle.acquire_token_on_behalf_of(tc, [f"{s.api.app_id}/Weather.Read"], claims_challenge=first["claims"])
    assert "access_token" in second, second.get("error_description")


def test_obo_expired_assertion(fake_entra: FakeEntra, s: Scenario, http: MsalHttp, fake_clock: Any) -> None:
    tc = fake_entra.user_token(s.user, client=s.client, resource=s.blueprint, scopes=["access_agent"], lifetime=60)
    fake_clock.advance(120)
    result = blueprint(s, http).acquire_token_on_behalf_of(tc, [f"{s.api.app_id}/Weather.Read"])
    assert_error(result, "invalid_grant", 500133)


# -- username / password (test-only ROPC)
# -------------------------------------------------------------------------


def test_username_password(fake_entra: FakeEntra, s: Scenario, http: MsalHttp) -> None:
    app = cca(s, http, s.client.app_id, s.client_secret)
    ok = app.acquire_token_by_username_password(s.user.upn, s.user_password, [f"{s.api.app_id}/Weather.Read"])
    assert "access_token" in ok, ok.get("error_description")
    assert ok["id_token_claims"]["oid"] == s.user.object_id
    assert app.get_accounts(username=s.user.upn)
    wrong = cca(s, http, s.client.app_id, s.client_secret).acquire_token_by_username_password(
        s.user.upn, "nope", [f"{s.api.app_id}/Weather.Read"]
    )
    assert_error(wrong, "invalid_grant", 50126)


# -- real HTTPS
# ------------------------------------------------------------------------------------------------------


@pytest.mark.loopback
def test_over_https(fake_entra: FakeEntra, s: Scenario) -> None:
    with (
        fake_entra.serve() as served,
        httpx2.Client(verify=ssl.create_default_context(cafile=served.ca_file)) as client,
    ):
        http = MsalHttp(client)
        authority = served.base_url + s.tenant.tenant_id
        # 127.0.0.1 is not a host MSAL knows, so it would ask login.microsoftonline.com's instance discovery
        # first; instance_discovery=False skips that and goes straight to the tenant's OIDC metadata.
        app = msal.ConfidentialClientApplication(
            s.client.app_id,
            client_credential=s.client_secret,
            authority=authority,
            http_client=http,
            instance_discovery=False,
        )
        result = app.acquire_token_for_client([f"{s.api.app_id}/.default"])
        assert "access_token" in result, result.get("error_description")
        assert http.posts[-1]["url"] == authority + "/oauth2/v2.0/token"
        bp = msal.ConfidentialClientApplication(
            s.blueprint.app_id,
            client_credential=s.blueprint_secret,
            authority=authority,
            http_client=http,
            validate_authority=False,
        )
        t1 = bp.acquire_token_for_client([EXCHANGE_SCOPE], fmi_path=s.agent.app_id)
        assert fake_entra.decode(t1["access_token"])["aud"] == "api://AzureADTokenExchange"
        key, cert_pem = fake_entra.add_certificate(s.client)
        cert_app = msal.ConfidentialClientApplication(
            s.client.app_id,
            client_credential={"private_key": key.decode(), "public_certificate": cert_pem.decode()},
            authority=authority,
            http_client=http,
            instance_discovery=False,
        )
        # the certificate assertion's aud is the served token endpoint (127.0.0.1:port)
        assert "access_token" in cert_app.acquire_token_for_client([f"{s.api.app_id}/.default"])
