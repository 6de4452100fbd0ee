"""Each credential type through MSAL to FakeEntra, and the credential fallback of spec §2.2."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from entra_mw import (
    AssertionCallback,
    CertificateCredential,
    ClientSecret,
    ManagedIdentityAssertion,
    SignedAssertionFile,
)
from entra_mw._acquisition._credentials import FileAssertion, load_certificate
from entra_mw._acquisition._types import TokenRequest
from entra_mw._acquisition.engine import Acquirer
from entra_mw.credentials import Credential
from entra_mw.errors import ConfigurationError, TokenAcquisitionError
from entra_mw.testing import FakeClock, FakeEntra, Scenario
from entra_mw.testing._token_endpoint import FakeOidcIssuer, fake_oidc_issuer

from .conftest import AcquirerFactory

EXCHANGE = "api://AzureADTokenExchange"
K8S = "https://oidc.prod-aks.azure.com/tenant/cluster/"
SUBJECT = "system:serviceaccount:agents:weather"


@pytest.fixture
def make(make_acquirer: AcquirerFactory) -> AcquirerFactory:
    def build(*credentials: Credential, **kw: Any) -> Acquirer:
        return make_acquirer(credentials=credentials, **kw)

    return build


@pytest.fixture
def k8s(fake_entra: FakeEntra, scn: Scenario) -> FakeOidcIssuer:
    """A Kubernetes cluster's OIDC issuer, trusted by the blueprint for ``SUBJECT`` (a federated credential)."""
    issuer = fake_oidc_issuer(fake_entra, K8S)
    fake_entra.add_federated_credential(scn.blueprint, issuer=K8S, subject=SUBJECT)
    return issuer


def app_request(scn: Scenario, **kw: Any) -> TokenRequest:
    return TokenRequest(
        flow="app",
        scopes=(scn.api.identifier_uris[0] + "/.default",),
        client_id=scn.blueprint.app_id,
        tenant=scn.tenant.tenant_id,
        **kw,
    )


def agent_request(scn: Scenario) -> TokenRequest:
    return TokenRequest(
        flow="agent_app",
        scopes=(scn.api.identifier_uris[0] + "/.default",),
        client_id=scn.blueprint.app_id,
        tenant=scn.tenant.tenant_id,
        agent_id=scn.agent.app_id,
    )


def assert_blueprint_token(fake: FakeEntra, scn: Scenario, token: str) -> dict[str, Any]:
    claims = fake.decode(token)
    assert claims["azp"] == scn.blueprint.app_id
    assert claims["aud"] == scn.api.app_id
    return claims


# -- certificates ------------------------------------------------------------------------------------------


def test_pem_certificate_file(fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory, tmp_path: Path) -> None:
    key_pem, cert_pem = fake_entra.add_certificate(scn.blueprint)
    path = tmp_path / "bundle.pem"
    path.write_bytes(cert_pem + key_pem)
    acquirer = make(CertificateCredential(path=str(path)))
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)
    # the agent flows use the same certificate for T1
    assert fake_entra.decode(acquirer.fetch(agent_request(scn)).token)["azp"] == scn.agent.app_id


@pytest.mark.parametrize("send_x5c", [False, True])
def test_pem_certificate_text(fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory, send_x5c: bool) -> None:
    key_pem, cert_pem = fake_entra.add_certificate(scn.blueprint)
    acquirer = make(CertificateCredential(pem=(key_pem + cert_pem).decode(), send_x5c=send_x5c))
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)


def test_send_x5c_from_config(fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory) -> None:
    key_pem, cert_pem = fake_entra.add_certificate(scn.blueprint)
    acquirer = make(CertificateCredential(pem=(key_pem + cert_pem).decode()), send_x5c=True)
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)


def _pfx(key_pem: bytes, cert_pem: bytes, password: bytes | None) -> bytes:
    key = serialization.load_pem_private_key(key_pem, None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return pkcs12.serialize_key_and_certificates(b"client", key, cert, None, encryption)  # type: ignore[arg-type]


@pytest.mark.parametrize("password", [None, "pfx-pa55"])
def test_pfx_file(
    fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory, tmp_path: Path, password: str | None
) -> None:
    key_pem, cert_pem = fake_entra.add_certificate(scn.blueprint)
    path = tmp_path / "client.pfx"
    path.write_bytes(_pfx(key_pem, cert_pem, password.encode() if password else None))
    acquirer = make(CertificateCredential(path=str(path), password=password))
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)


def test_pfx_base64_with_password(fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory) -> None:
    key_pem, cert_pem = fake_entra.add_certificate(scn.blueprint)
    blob = base64.b64encode(_pfx(key_pem, cert_pem, b"s3cret")).decode()
    acquirer = make(CertificateCredential(base64=blob, password="s3cret", send_x5c=True))
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)


def test_certificate_thumbprints(fake_entra: FakeEntra, scn: Scenario) -> None:
    key_pem, cert_pem = fake_entra.add_certificate(scn.blueprint)
    material = load_certificate(CertificateCredential(pem=(key_pem + cert_pem).decode()))
    registered = scn.blueprint.certificates[-1]

    def b64url(hex_digest: str) -> str:
        return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode()

    assert b64url(material.sha1_thumbprint) == registered.thumbprint_sha1
    assert b64url(material.sha256_thumbprint) == registered.thumbprint_sha256
    assert len(material.sha256_thumbprint) == 64


def test_certificate_problems_are_configuration_errors(fake_entra: FakeEntra, scn: Scenario, tmp_path: Path) -> None:
    key_pem, cert_pem = fake_entra.add_certificate(scn.blueprint)
    other_key, _ = fake_entra.add_certificate(scn.client)
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError, match=r"missing\.pem.*does not exist"):
        load_certificate(CertificateCredential(path=str(missing)))
    with pytest.raises(ConfigurationError, match="wrong password"):
        load_certificate(
            CertificateCredential(base64=base64.b64encode(_pfx(key_pem, cert_pem, b"a")).decode(), password="b")
        )
    with pytest.raises(ConfigurationError, match="not valid base64"):
        load_certificate(CertificateCredential(base64="%%%"))
    if other_key != key_pem:
        with pytest.raises(ConfigurationError, match="does not match"):
            load_certificate(CertificateCredential(pem=(other_key + cert_pem).decode()))
    with pytest.raises(ConfigurationError, match="no certificate"):
        load_certificate(CertificateCredential(pem=key_pem.decode()))
    with pytest.raises(ConfigurationError) as info:
        load_certificate(CertificateCredential(pem=key_pem.decode()))
    assert "PRIVATE KEY" not in str(info.value)


# -- signed assertion file (workload identity) -------------------------------------------------------------


def test_signed_assertion_file_and_rotation(
    fake_entra: FakeEntra,
    fake_clock: FakeClock,
    scn: Scenario,
    make: AcquirerFactory,
    tmp_path: Path,
    k8s: FakeOidcIssuer,
) -> None:
    path = tmp_path / "azure-identity-token"
    path.write_text(k8s.mint(SUBJECT, EXCHANGE, lifetime=3600))
    acquirer = make(SignedAssertionFile(path=str(path)))
    first = acquirer.fetch(app_request(scn))
    assert_blueprint_token(fake_entra, scn, first.token)

    # the kubelet rotates the file; the old token has expired by then
    fake_clock.advance(3700)
    rotated = k8s.mint(SUBJECT, EXCHANGE, lifetime=3600)
    path.write_text(rotated + "\n")
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file systems
    second = acquirer.fetch(app_request(scn))
    assert second.token != first.token
    assert fake_entra.request_count("token") == 2


def test_file_assertion_rereads_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a.b.c")
    reader = FileAssertion(str(path))
    assert reader() == "a.b.c"
    path.write_text("d.e.f")
    os.utime(path, ns=(5, 5))
    assert reader() == "d.e.f"
    path.unlink()
    with pytest.raises(ConfigurationError, match="does not exist"):
        reader()


def test_signed_assertion_file_from_environment(
    fake_entra: FakeEntra,
    scn: Scenario,
    make: AcquirerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    k8s: FakeOidcIssuer,
) -> None:
    path = tmp_path / "token"
    path.write_text(k8s.mint(SUBJECT, EXCHANGE))
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(path))
    acquirer = make(SignedAssertionFile())
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)


def test_expired_signed_assertion_is_refused(
    fake_entra: FakeEntra,
    fake_clock: FakeClock,
    scn: Scenario,
    make: AcquirerFactory,
    tmp_path: Path,
    k8s: FakeOidcIssuer,
) -> None:
    path = tmp_path / "token"
    assertion = k8s.mint(SUBJECT, EXCHANGE, lifetime=60)
    path.write_text(assertion)
    fake_clock.advance(3600)
    acquirer = make(SignedAssertionFile(path=str(path)))
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(app_request(scn))
    assert info.value.error == "invalid_client"
    assert 700024 in info.value.error_codes
    assert info.value.status_code == 502
    assert assertion not in str(info.value) and assertion not in repr(info.value)


# -- assertion callback --------------------------------------------------------------------------------------


def test_assertion_callback_with_and_without_context(
    fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory, k8s: FakeOidcIssuer
) -> None:
    contexts: list[dict[str, Any]] = []

    def with_context(context: dict[str, Any]) -> str:
        contexts.append(context)
        return k8s.mint(SUBJECT, EXCHANGE)

    acquirer = make(AssertionCallback(with_context))
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)
    acquirer.fetch(agent_request(scn))  # T1 carries fmi_path in the context
    assert contexts[0]["client_id"] == scn.blueprint.app_id
    assert contexts[0]["token_endpoint"].endswith("/oauth2/v2.0/token")
    assert any(c.get("fmi_path") == scn.agent.app_id for c in contexts)

    calls: list[int] = []

    def no_args() -> str:
        calls.append(1)
        return k8s.mint(SUBJECT, EXCHANGE) + "\n"

    assert_blueprint_token(fake_entra, scn, make(AssertionCallback(no_args)).fetch(app_request(scn)).token)
    assert calls == [1]


def test_assertion_callback_returning_garbage(scn: Scenario, make: AcquirerFactory) -> None:
    acquirer = make(AssertionCallback(lambda: ""))
    with pytest.raises(ConfigurationError, match="empty"):
        acquirer.fetch(app_request(scn))


# -- managed identity ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", [None, "0d9f1a3c-8a3e-4a8e-9d2c-1f5e7b6a4c3d"])
def test_managed_identity_assertion_via_imds(
    fake_entra: FakeEntra,
    scn: Scenario,
    make: AcquirerFactory,
    client_id: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FakeEntra has no IMDS: an httpx2 MockTransport answers MSAL's IMDS request (Azure VM path) with an
    Entra-issued app-only token of a managed identity, trusted by the blueprint through a FIC."""
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    mi = fake_entra.add_app(scn.tenant, display_name="vm-identity")
    mi_token = fake_entra.app_token(mi, resource=EXCHANGE)
    mi_claims = fake_entra.decode(mi_token)
    fake_entra.add_federated_credential(scn.blueprint, issuer=mi_claims["iss"], subject=mi_claims["sub"])
    imds: list[httpx2.Request] = []

    def route(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "169.254.169.254":
            imds.append(request)
            body = {"access_token": mi_token, "expires_in": "3599", "resource": EXCHANGE, "token_type": "Bearer"}
            return httpx2.Response(200, json=body)
        return fake_entra.handle(request)

    acquirer = make(ManagedIdentityAssertion(client_id=client_id), transport=httpx2.MockTransport(route))
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)
    acquirer.fetch(agent_request(scn))  # T1 with the MI assertion, served from MSAL's MI cache
    assert len(imds) == 1
    params = imds[0].url.params
    assert params["resource"] == EXCHANGE
    assert imds[0].headers["Metadata"] == "true"
    assert params.get("client_id") == client_id


def test_managed_identity_error_is_acquisition_error(
    scn: Scenario, make: AcquirerFactory, fake_entra: FakeEntra, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)

    def route(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "169.254.169.254":
            return httpx2.Response(400, json={"error": "invalid_request", "error_description": "Identity not found"})
        return fake_entra.handle(request)

    acquirer = make(ManagedIdentityAssertion(), transport=httpx2.MockTransport(route))
    with pytest.raises(TokenAcquisitionError, match="managed identity") as info:
        acquirer.fetch(app_request(scn))
    assert info.value.error == "invalid_request"
    assert info.value.http_status == 400
    assert info.value.status_code == 503
    assert fake_entra.request_count("token") == 0  # a 400 from IMDS is not retried


# -- several credentials (spec §2.2) ------------------------------------------------------------------------


def test_first_loadable_credential_is_used(
    fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory, tmp_path: Path
) -> None:
    acquirer = make(
        CertificateCredential(path=str(tmp_path / "gone.pfx")),
        SignedAssertionFile(path=str(tmp_path / "gone-token")),
        ClientSecret(scn.blueprint_secret),
    )
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)
    assert fake_entra.request_count("token") == 1


def test_refused_credential_falls_back_once(fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory) -> None:
    acquirer = make(ClientSecret("wrong-secret"), ClientSecret(scn.blueprint_secret))
    assert_blueprint_token(fake_entra, scn, acquirer.fetch(app_request(scn)).token)
    assert fake_entra.request_count("token") == 2
    acquirer.fetch(agent_request(scn))  # the good credential stays in use (T1 + agent token)
    assert fake_entra.request_count("token") == 4


def test_fallback_happens_only_once(fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory) -> None:
    acquirer = make(ClientSecret("wrong-1"), ClientSecret("wrong-2"), ClientSecret(scn.blueprint_secret))
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(app_request(scn))
    assert info.value.error == "invalid_client"
    assert 7000215 in info.value.error_codes
    assert fake_entra.request_count("token") == 2
    assert "wrong-" not in str(info.value)


def test_nothing_loads(scn: Scenario, make: AcquirerFactory, tmp_path: Path) -> None:
    acquirer = make(CertificateCredential(path=str(tmp_path / "a.pem")), SignedAssertionFile(path=str(tmp_path / "b")))
    with pytest.raises(ConfigurationError, match=r"no client credential could be loaded: #0: .*a\.pem.*#1: .*b'"):
        acquirer.fetch(app_request(scn))
    with pytest.raises(ConfigurationError, match="no client credentials configured"):
        make().fetch(app_request(scn))


def test_t1_failure_with_a_bad_credential_falls_back(
    fake_entra: FakeEntra, scn: Scenario, make: AcquirerFactory
) -> None:
    acquirer = make(ClientSecret("wrong"), ClientSecret(scn.blueprint_secret))
    token = acquirer.fetch(agent_request(scn))
    assert fake_entra.decode(token.token)["azp"] == scn.agent.app_id


def test_credential_reprs_hide_secrets(scn: Scenario) -> None:
    assert scn.blueprint_secret not in repr(ClientSecret(scn.blueprint_secret))
