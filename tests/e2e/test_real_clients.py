"""Real clients against FakeEntra served over HTTPS on loopback: azure-identity's credentials, MSAL Python on its
own ``requests`` session, and entra_mw itself with no injected transport. Every token they get must validate
with ``EntraAuth`` fetching metadata and keys from the same served instance (spec §3, §4, §5)."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from entra_mw import ClientSecret, DownstreamApi, EntraAuth, EntraConfig, Principal
from entra_mw.testing._token_endpoint import fake_oidc_issuer

from ._clients import EXCHANGE_SCOPE, K8S_ISSUER, K8S_SUBJECT, Served, served_fake, token_of

pytestmark = pytest.mark.loopback


@pytest.fixture
def w() -> Iterator[Served]:
    yield from served_fake()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- azure-identity ------------------------------------------------------------------------------------------


@pytest.fixture
def azid() -> types.ModuleType:
    module: types.ModuleType = pytest.importorskip("azure.identity")
    return module


def _azure_kw(w: Served, **kw: Any) -> dict[str, Any]:
    # The served host is not one Microsoft knows: skip instance discovery (it would ask
    # login.microsoftonline.com), go straight to the tenant's OIDC metadata on the served instance.
    return {"authority": w.served.base_url, "disable_instance_discovery": True, **kw}


def _azure_token(cred: Any, scope: str, **kw: Any) -> str:
    try:
        token: str = cred.get_token(scope, **kw).token
    finally:
        cred.close()
    return token


def _assert_app_token(w: Served, token: str, client_id: str) -> None:
    principal = w.validate(token)
    assert principal.is_app
    assert principal.client_id == client_id
    assert principal.roles == frozenset({"Weather.Read.All"})


def test_azure_client_secret_via_env_ca(w: Served, azid: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", w.served.ca_file)
    cred = azid.ClientSecretCredential(w.tid, w.scn.client.app_id, w.scn.client_secret, **_azure_kw(w))
    try:
        info = cred.get_token_info(w.api_scope())
        again = cred.get_token(w.api_scope())
    finally:
        cred.close()
    assert again.token == info.token  # served from azure-identity's (MSAL's) cache
    assert w.fake.request_count("token:client_credentials") == 1
    assert info.expires_on > 0
    _assert_app_token(w, info.token, w.scn.client.app_id)


def test_azure_client_secret_with_cae_and_claims(w: Served, azid: types.ModuleType) -> None:
    # enable_cae sends the client capability claims {"access_token":{"xms_cc":{"values":["CP1"]}}}; a claims
    # challenge is merged into the same parameter. Entra accepts both on client credentials.
    cred = azid.ClientSecretCredential(
        w.tid, w.scn.client.app_id, w.scn.client_secret, **_azure_kw(w, connection_verify=w.served.ca_file)
    )
    challenge = json.dumps({"access_token": {"nbf": {"essential": True, "value": "1700000000"}}})
    try:
        cae = cred.get_token(w.api_scope(), enable_cae=True).token
        claimed = cred.get_token(w.api_scope(), claims=challenge).token
    finally:
        cred.close()
    _assert_app_token(w, cae, w.scn.client.app_id)
    _assert_app_token(w, claimed, w.scn.client.app_id)


def test_azure_wrong_secret_surfaces_the_aadsts_error(w: Served, azid: types.ModuleType) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    cred = azid.ClientSecretCredential(
        w.tid, w.scn.client.app_id, "not-the-secret", **_azure_kw(w, connection_verify=w.served.ca_file)
    )
    with pytest.raises(ClientAuthenticationError) as info:
        _azure_token(cred, w.api_scope())
    assert "AADSTS7000215" in str(info.value)
    assert "not-the-secret" not in str(info.value)


@pytest.mark.parametrize("send_chain", [False, True], ids=["x5t#S256", "x5c"])
def test_azure_certificate(w: Served, azid: types.ModuleType, tmp_path: Path, send_chain: bool) -> None:
    key_pem, cert_pem = w.fake.add_certificate(w.scn.client)
    pem = tmp_path / "client.pem"
    pem.write_bytes(key_pem + cert_pem)
    cred = azid.CertificateCredential(
        w.tid,
        w.scn.client.app_id,
        str(pem),
        send_certificate_chain=send_chain,
        **_azure_kw(w, connection_verify=w.served.ca_file),
    )
    # The assertion's aud is the served token endpoint (https://127.0.0.1:{port}/{tid}/oauth2/v2.0/token).
    _assert_app_token(w, _azure_token(cred, w.api_scope()), w.scn.client.app_id)


def test_azure_client_assertion_from_kubernetes(w: Served, azid: types.ModuleType) -> None:
    k8s = fake_oidc_issuer(w.fake, K8S_ISSUER)
    w.fake.add_federated_credential(w.scn.client, issuer=k8s.issuer, subject=K8S_SUBJECT)
    calls: list[int] = []

    def assertion() -> str:
        calls.append(1)
        return k8s.mint(K8S_SUBJECT, "api://AzureADTokenExchange")

    cred = azid.ClientAssertionCredential(
        w.tid, w.scn.client.app_id, assertion, **_azure_kw(w, connection_verify=w.served.ca_file)
    )
    _assert_app_token(w, _azure_token(cred, w.api_scope()), w.scn.client.app_id)
    assert calls == [1]


def test_azure_client_assertion_with_wrong_subject_is_refused(w: Served, azid: types.ModuleType) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    k8s = fake_oidc_issuer(w.fake, K8S_ISSUER)
    w.fake.add_federated_credential(w.scn.client, issuer=k8s.issuer, subject=K8S_SUBJECT)
    cred = azid.ClientAssertionCredential(
        w.tid,
        w.scn.client.app_id,
        lambda: k8s.mint("system:serviceaccount:agents:intruder", "api://AzureADTokenExchange"),
        **_azure_kw(w, connection_verify=w.served.ca_file),
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS"):
        _azure_token(cred, w.api_scope())


def test_azure_workload_identity(
    w: Served, azid: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k8s = fake_oidc_issuer(w.fake, K8S_ISSUER)
    w.fake.add_federated_credential(w.scn.client, issuer=k8s.issuer, subject=K8S_SUBJECT)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(k8s.mint(K8S_SUBJECT, "api://AzureADTokenExchange"))
    # What the AKS workload-identity webhook injects into the pod.
    monkeypatch.setenv("AZURE_TENANT_ID", w.tid)
    monkeypatch.setenv("AZURE_CLIENT_ID", w.scn.client.app_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", w.served.base_url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", w.served.ca_file)
    cred = azid.WorkloadIdentityCredential(disable_instance_discovery=True)
    _assert_app_token(w, _azure_token(cred, w.api_scope()), w.scn.client.app_id)


def test_azure_on_behalf_of(w: Served, azid: types.ModuleType) -> None:
    cred = azid.OnBehalfOfCredential(
        w.tid,
        w.scn.blueprint.app_id,
        client_secret=w.scn.blueprint_secret,
        user_assertion=w.tc(),
        **_azure_kw(w, connection_verify=w.served.ca_file),
    )
    principal = w.validate(_azure_token(cred, w.api_scope()))
    assert not principal.is_app
    assert principal.oid == w.scn.user.object_id
    assert principal.client_id == w.scn.blueprint.app_id
    assert principal.scopes == frozenset({"Weather.Read"})
    assert w.fake.request_count("token:jwt_bearer") == 1


def test_azure_on_behalf_of_with_certificate(w: Served, azid: types.ModuleType) -> None:
    key_pem, cert_pem = w.fake.add_certificate(w.scn.blueprint)
    cred = azid.OnBehalfOfCredential(
        w.tid,
        w.scn.blueprint.app_id,
        client_certificate=key_pem + cert_pem,
        user_assertion=w.tc(),
        **_azure_kw(w, connection_verify=w.served.ca_file),
    )
    assert w.validate(_azure_token(cred, w.api_scope())).oid == w.scn.user.object_id


@pytest.mark.parametrize("credential", ["secret", "certificate"])
def test_azure_environment_credential(
    w: Served, azid: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, credential: str
) -> None:
    # The AZURE_* variables an app (or DefaultAzureCredential's first link) is configured with.
    monkeypatch.setenv("AZURE_TENANT_ID", w.tid)
    monkeypatch.setenv("AZURE_CLIENT_ID", w.scn.client.app_id)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", w.served.base_url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", w.served.ca_file)
    if credential == "secret":
        monkeypatch.setenv("AZURE_CLIENT_SECRET", w.scn.client_secret)
    else:
        key_pem, cert_pem = w.fake.add_certificate(w.scn.client)
        pem = tmp_path / "client.pem"
        pem.write_bytes(key_pem + cert_pem)
        monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(pem))
    cred = azid.EnvironmentCredential(disable_instance_discovery=True)
    _assert_app_token(w, _azure_token(cred, w.api_scope()), w.scn.client.app_id)


def test_azure_authorization_code_credential(w: Served, azid: types.ModuleType) -> None:
    import urllib.parse

    import httpx2

    redirect = "https://webapp.example/auth/callback"
    web = w.fake.add_app(w.scn.tenant, display_name="weather-web", redirect_uris=[redirect])
    secret = w.fake.add_secret(web)
    w.fake.grant_consent(web, w.scn.api, w.scn.api.scopes)
    scope = w.api_scope("Weather.Read")
    query = urllib.parse.urlencode(
        {"client_id": web.app_id, "response_type": "code", "redirect_uri": redirect, "scope": scope, "state": "s1"}
    )
    with httpx2.Client(verify=w.served.ssl_context(), timeout=10) as browser:
        back = w.fake.sign_in(
            f"{w.served.authorize_endpoint(w.tid)}?{query}",
            username=w.scn.user.upn,
            password=w.scn.user_password,
            client=browser,
        )
    cred = azid.AuthorizationCodeCredential(
        w.tid,
        web.app_id,
        back["code"],
        redirect,
        client_secret=secret,
        **_azure_kw(w, connection_verify=w.served.ca_file),
    )
    principal = w.validate(_azure_token(cred, scope))
    assert principal.oid == w.scn.user.object_id
    assert principal.client_id == web.app_id
    assert principal.scopes == frozenset({"Weather.Read"})


@pytest.mark.anyio
async def test_azure_async_credentials(w: Served, azid: types.ModuleType) -> None:
    aio = pytest.importorskip("azure.identity.aio")
    from azure.core.pipeline.transport import AsyncioRequestsTransport

    # aiohttp is azure-core's default async transport; the requests-based one needs nothing more.
    def transport() -> Any:
        return AsyncioRequestsTransport(connection_verify=w.served.ca_file)

    k8s = fake_oidc_issuer(w.fake, K8S_ISSUER)
    w.fake.add_federated_credential(w.scn.client, issuer=k8s.issuer, subject=K8S_SUBJECT)
    kw = _azure_kw(w)
    async with (
        aio.ClientSecretCredential(
            w.tid, w.scn.client.app_id, w.scn.client_secret, transport=transport(), **kw
        ) as secret,
        aio.ClientAssertionCredential(
            w.tid,
            w.scn.client.app_id,
            lambda: k8s.mint(K8S_SUBJECT, "api://AzureADTokenExchange"),
            transport=transport(),
            **kw,
        ) as assertion,
        aio.OnBehalfOfCredential(
            w.tid,
            w.scn.blueprint.app_id,
            client_secret=w.scn.blueprint_secret,
            user_assertion=w.tc(),
            transport=transport(),
            **kw,
        ) as obo,
    ):
        tokens = [(await cred.get_token(w.api_scope())).token for cred in (secret, assertion, obo)]
    api_config = EntraConfig(tenant_id=w.tid, client_id=w.scn.api.app_id, instance=w.served.base_url)
    async with EntraAuth(api_config, verify=w.served.ca_file) as api:
        app_secret, app_assertion, user = [await api.avalidate(token) for token in tokens]
    assert app_secret.is_app and app_assertion.is_app
    assert app_secret.client_id == app_assertion.client_id == w.scn.client.app_id
    assert user.oid == w.scn.user.object_id


# -- MSAL Python on its default requests session ----------------------------------------------------------


@pytest.fixture
def msal_ca(w: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    # MSAL's own requests.Session trusts the served CA through the standard requests variable.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", w.served.ca_file)


@pytest.mark.usefixtures("msal_ca")
def test_msal_client_credentials(w: Served) -> None:
    app = w.cca(w.scn.client.app_id, w.scn.client_secret)
    first = app.acquire_token_for_client([w.api_scope()])
    again = app.acquire_token_for_client([w.api_scope()])
    assert first["token_source"] == "identity_provider"
    assert again["token_source"] == "cache"
    assert first["token_type"] == "Bearer"
    assert 3600 <= first["expires_in"] <= 5400  # Entra's 60-90 min (spec §5.1)
    _assert_app_token(w, token_of(first), w.scn.client.app_id)


@pytest.mark.usefixtures("msal_ca")
def test_msal_with_served_instance_discovery(w: Served) -> None:
    # MSAL asks instance discovery for hosts it does not know; here it asks the served FakeEntra itself.
    app = w.cca(
        w.scn.client.app_id,
        w.scn.client_secret,
        instance_discovery=w.served.base_url + "common/discovery/instance",
    )
    _assert_app_token(w, token_of(app.acquire_token_for_client([w.api_scope()])), w.scn.client.app_id)
    assert w.fake.request_count("instance_discovery") == 1


@pytest.mark.usefixtures("msal_ca")
def test_msal_certificate(w: Served) -> None:
    key_pem, cert_pem = w.fake.add_certificate(w.scn.client)
    app = w.cca(w.scn.client.app_id, {"private_key": key_pem.decode(), "public_certificate": cert_pem.decode()})
    _assert_app_token(w, token_of(app.acquire_token_for_client([w.api_scope()])), w.scn.client.app_id)


@pytest.mark.usefixtures("msal_ca")
def test_msal_on_behalf_of(w: Served) -> None:
    app = w.cca(w.scn.blueprint.app_id, w.scn.blueprint_secret)
    result = app.acquire_token_on_behalf_of(w.tc(), [w.api_scope("Weather.Read")])
    principal = w.validate(token_of(result))
    assert principal.oid == w.scn.user.object_id
    assert principal.scopes == frozenset({"Weather.Read"})
    assert result["refresh_token"]  # offline_access was asked for (MSAL decorates OBO scopes)
    assert result["id_token_claims"]["oid"] == w.scn.user.object_id


@pytest.mark.usefixtures("msal_ca")
def test_user_realm_discovery_over_https(w: Served) -> None:
    import requests

    url = w.served.base_url + "common/userrealm/{}?api-version=1.0"
    with requests.Session() as session:
        managed = session.get(url.format(w.scn.user.upn), timeout=5).json()
        unknown = session.get(url.format("bob@fabrikam.example"), timeout=5).json()
    assert managed["account_type"] == "Managed"
    assert managed["domain_name"] == w.scn.tenant.domain
    assert unknown["account_type"] == "Unknown"
    assert "domain_name" not in unknown
    assert w.fake.request_count("user_realm") == 2


@pytest.mark.usefixtures("msal_ca")
def test_msal_agent_t1_and_autonomous(w: Served) -> None:
    blueprint = w.cca(w.scn.blueprint.app_id, w.scn.blueprint_secret)
    t1 = token_of(blueprint.acquire_token_for_client([EXCHANGE_SCOPE], fmi_path=w.scn.agent.app_id))
    assert w.fake.decode(t1)["aud"] == "api://AzureADTokenExchange"
    agent = w.agent_cca()
    principal = w.validate(token_of(agent.acquire_token_for_client([w.api_scope()])))
    assert principal.is_app
    assert principal.is_agent
    assert principal.client_id == w.scn.agent.app_id
    assert principal.agent_blueprint == w.scn.blueprint.app_id


@pytest.mark.usefixtures("msal_ca")
def test_msal_agent_on_behalf_of(w: Served) -> None:
    agent = w.agent_cca()
    principal = w.validate(token_of(agent.acquire_token_on_behalf_of(w.tc(), [w.api_scope("Weather.Read")])))
    assert principal.oid == w.scn.user.object_id
    assert principal.client_id == w.scn.agent.app_id
    assert principal.agent_blueprint == w.scn.blueprint.app_id
    assert not principal.is_agent_user


@pytest.mark.usefixtures("msal_ca")
@pytest.mark.parametrize("by", ["username", "user_object_id"])
def test_msal_agent_user_fic(w: Served, by: str) -> None:
    agent = w.agent_cca()
    t2 = token_of(agent.acquire_token_for_client([EXCHANGE_SCOPE]))
    who = {"username": w.scn.agent_user.upn} if by == "username" else {"user_object_id": w.scn.agent_user.object_id}
    result = agent.acquire_token_by_user_federated_identity_credential([w.api_scope("Weather.Read")], t2, **who)
    principal = w.validate(token_of(result))
    assert principal.is_agent_user
    assert principal.oid == w.scn.agent_user.object_id
    assert principal.client_id == w.scn.agent.app_id
    assert w.fake.request_count("token:user_fic") == 1


# -- entra_mw over the network (no injected transport) -----------------------------------------------------


def _engine(w: Served) -> EntraAuth:
    """The blueprint's engine, as the sidecar runs it: validates Tc, gets tokens for the weather API."""
    scope = w.api_scope
    config = EntraConfig(
        tenant_id=w.tid,
        client_id=w.scn.blueprint.app_id,
        instance=w.served.base_url,
        credentials=(ClientSecret(w.scn.blueprint_secret),),
        downstream_apis={
            "weather": DownstreamApi(base_url="https://weather.example/v1/", scopes=(scope("Weather.Read"),)),
            "weather_app": DownstreamApi(
                base_url="https://weather.example/v1/", scopes=(scope(),), request_app_token=True
            ),
        },
    )
    return EntraAuth(config, verify=w.served.ca_file)


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    assert scheme == "Bearer"
    return token


def _check_flows(w: Served, headers: dict[str, str]) -> None:
    api = w.validator()
    app = api.validate(_bearer(headers["app"]))
    assert app.is_app and app.client_id == w.scn.blueprint.app_id
    obo = api.validate(_bearer(headers["obo"]))
    assert obo.oid == w.scn.user.object_id and obo.client_id == w.scn.blueprint.app_id
    autonomous = api.validate(_bearer(headers["autonomous"]))
    assert autonomous.is_app and autonomous.is_agent and autonomous.client_id == w.scn.agent.app_id
    agent_obo = api.validate(_bearer(headers["agent_obo"]))
    assert agent_obo.oid == w.scn.user.object_id and agent_obo.client_id == w.scn.agent.app_id
    assert agent_obo.agent_blueprint == w.scn.blueprint.app_id
    for name in ("agent_user", "agent_user_by_id"):
        agent_user = api.validate(_bearer(headers[name]))
        assert agent_user.is_agent_user and agent_user.oid == w.scn.agent_user.object_id


def test_library_every_flow_over_https(w: Served) -> None:
    auth = _engine(w)
    w.stack.callback(auth.close)
    tc = w.tc()
    caller: Principal = auth.validate(tc)
    assert caller.oid == w.scn.user.object_id
    downstream = auth.downstream(caller, tc)
    agent_id = w.scn.agent.app_id
    headers = {
        "app": auth.downstream().authorization_header("weather_app"),
        "obo": downstream.authorization_header("weather"),
        "autonomous": downstream.for_agent(agent_id).authorization_header("weather_app"),
        "agent_obo": downstream.for_agent(agent_id).authorization_header("weather"),
        "agent_user": downstream.for_agent(agent_id, username=w.scn.agent_user.upn).authorization_header("weather"),
        "agent_user_by_id": downstream.for_agent(agent_id, user_id=w.scn.agent_user.object_id).authorization_header(
            "weather"
        ),
    }
    _check_flows(w, headers)
    before = w.fake.request_count("token")
    assert downstream.authorization_header("weather") == headers["obo"]  # cached: no new token request
    assert auth.downstream().authorization_header("weather_app") == headers["app"]
    assert w.fake.request_count("token") == before


@pytest.mark.anyio
async def test_library_every_flow_over_https_async(w: Served) -> None:
    tc = w.tc()
    api_config = EntraConfig(tenant_id=w.tid, client_id=w.scn.api.app_id, instance=w.served.base_url)
    async with _engine(w) as auth, EntraAuth(api_config, verify=w.served.ca_file) as api:
        caller = await auth.avalidate(tc)
        assert caller.client_id == w.scn.client.app_id
        downstream = auth.downstream(caller, tc)
        agent = downstream.for_agent(w.scn.agent.app_id)
        headers = {
            "app": await auth.downstream().aauthorization_header("weather_app"),
            "obo": await downstream.aauthorization_header("weather"),
            "autonomous": await agent.aauthorization_header("weather", app=True, scopes=[w.api_scope()]),
            "agent_obo": await agent.aauthorization_header("weather"),
            "agent_user": await downstream.for_agent(
                w.scn.agent.app_id, username=w.scn.agent_user.upn
            ).aauthorization_header("weather"),
            "agent_user_by_id": await downstream.for_agent(
                w.scn.agent.app_id, user_id=w.scn.agent_user.object_id
            ).aauthorization_header("weather"),
        }
        # avalidate over the network: this validator fetches metadata and keys on the event loop.
        principals = [await api.avalidate(_bearer(h)) for h in headers.values()]
    assert {p.client_id for p in principals} == {w.scn.blueprint.app_id, w.scn.agent.app_id}
    await anyio.to_thread.run_sync(_check_flows, w, headers)
