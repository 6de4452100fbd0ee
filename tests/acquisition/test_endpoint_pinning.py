"""Where token requests may go (the token endpoint MSAL reads from discovery is pinned to the instance; plain
http only for an opted-in loopback instance, or the managed-identity endpoints), a downstream call whose CA
file cannot be loaded, and URLs with a password in errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import anyio
import httpx2
import pytest

from entra_mw import ClientSecret, ConfigurationError, DownstreamApi, EntraAuth, EntraConfig, TokenAcquisitionError
from entra_mw._acquisition._msal_http import EndpointRefused, MsalHttpClient
from entra_mw._acquisition._types import TokenRequest
from entra_mw._acquisition.engine import Acquirer
from entra_mw._downstream import DownstreamCallError
from entra_mw._http import HttpSeam
from entra_mw.testing import FakeClock, FakeEntra, Scenario

from ._recording import CLIENT, TENANT, RecordingCache


def ok(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json={"ok": True})


def msal_client(**options: Any) -> MsalHttpClient:
    return MsalHttpClient(HttpSeam(transport=httpx2.MockTransport(ok)), **options)


PUBLIC = "https://login.microsoftonline.com/"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/tenant/oauth2/v2.0/token",  # another host
        "https://login.microsoftonline.com:8443/tenant/oauth2/v2.0/token",  # another port
        "http://login.microsoftonline.com/tenant/oauth2/v2.0/token",  # plain http, though a transport is injected
        "https://user:pw@login.microsoftonline.com/tenant/oauth2/v2.0/token",  # userinfo
    ],
)
def test_token_client_refuses_addresses_off_the_instance(url: str) -> None:
    client = msal_client(instance=PUBLIC)
    with pytest.raises(EndpointRefused, match="refused identity endpoint"):
        client.post(url, data={"grant_type": "client_credentials"})


def test_token_client_accepts_the_instance_and_its_cloud_aliases() -> None:
    client = msal_client(instance=PUBLIC)
    assert client.post(f"{PUBLIC}tenant/oauth2/v2.0/token", data={"a": "b"}).status_code == 200
    assert client.get("https://login.windows.net/tenant/v2.0/.well-known/openid-configuration").status_code == 200


def test_plain_http_only_for_an_opted_in_loopback_instance() -> None:
    url = "http://127.0.0.1:8080/tenant/oauth2/v2.0/token"
    with pytest.raises(EndpointRefused, match="allow_insecure_http"):
        msal_client(instance="http://127.0.0.1:8080/").post(url, data={"a": "b"})
    client = msal_client(instance="http://127.0.0.1:8080/", allow_insecure_http=True)
    assert client.post(url, data={"a": "b"}).status_code == 200


def test_managed_identity_client_keeps_its_local_http() -> None:
    client = msal_client(allow_local_http=True, cache_discovery=False)
    assert client.get("http://169.254.169.254/metadata/identity/oauth2/token").status_code == 200
    assert client.get("http://localhost:42356/msi/token").status_code == 200
    with pytest.raises(ConfigurationError, match="https"):
        client.get("http://metadata.example/token")


def test_a_token_endpoint_from_discovery_off_the_instance_is_never_asked(
    fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario
) -> None:
    """Discovery names a token endpoint on another host: MSAL never posts the client secret there, and the
    caller gets a 502 (Entra's answer is unusable), not a retry storm."""
    asked: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        asked.append(str(request.url))
        if request.url.path.endswith("/.well-known/openid-configuration"):
            real = fake_entra.transport.handle_request(request)
            real.read()
            doc = json.loads(real.content)
            doc["token_endpoint"] = "https://collector.example/steal"
            return httpx2.Response(200, json=doc)
        return fake_entra.transport.handle_request(request)

    config = EntraConfig(
        tenant_id=scn.tenant.tenant_id,
        client_id=scn.blueprint.app_id,
        credentials=(ClientSecret(scn.blueprint_secret),),
    )
    seam = HttpSeam(transport=httpx2.MockTransport(handler))
    acquirer = Acquirer(config, seam, fake_clock)
    try:
        request = TokenRequest(
            flow="app", scopes=(f"{scn.api.app_id}/.default",), client_id=config.client_id, tenant=config.tenant_id
        )
        with pytest.raises(TokenAcquisitionError, match="refused identity endpoint") as caught:
            acquirer.fetch(request)
        assert caught.value.status_code == 502
    finally:
        acquirer.close()
        seam.close()
    assert asked and not any("collector.example" in url for url in asked)


# -- a downstream call whose CA file is missing -------------------------------------------------------------


def engine_without_ca(tmp_path: Path) -> EntraAuth:
    config = EntraConfig(
        tenant_id=TENANT,
        client_id=CLIENT,
        credentials=(ClientSecret("s3cr3t"),),
        downstream_apis={
            "weather": DownstreamApi(
                base_url="https://api.example.com/", scopes=("api://weather/.default",), request_app_token=True
            )
        },
    )
    return EntraAuth(config, token_cache=cast("Any", RecordingCache()), verify=str(tmp_path / "gone-ca.pem"))


def test_missing_ca_file_on_a_downstream_call_is_a_502(tmp_path: Path) -> None:
    with engine_without_ca(tmp_path) as auth, pytest.raises(DownstreamCallError) as caught:
        auth.downstream().call("weather", "forecast")
    assert caught.value.status_code == 502


def test_missing_ca_file_on_an_async_downstream_call_is_a_502(tmp_path: Path) -> None:
    auth = engine_without_ca(tmp_path)

    async def call() -> None:
        try:
            await auth.downstream().acall("weather", "forecast")
        finally:
            await auth.aclose()

    with pytest.raises(DownstreamCallError) as caught:
        anyio.run(call)
    assert caught.value.status_code == 502


# -- passwords in URLs -------------------------------------------------------------------------------------


def test_check_url_never_repeats_a_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        HttpSeam().check_url("http://alice:hunter2@api.example.com/x", what="base_url")
    assert "hunter2" not in str(caught.value) and "alice" not in str(caught.value)
    assert "api.example.com" in str(caught.value)
