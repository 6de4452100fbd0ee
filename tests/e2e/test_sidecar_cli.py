"""``entra-mw sidecar`` as a user runs it: a subprocess configured only by environment variables, FakeEntra over
HTTPS trusted through ``SSL_CERT_FILE``, and HTTP calls from outside."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from entra_mw.cli import main
from entra_mw.sidecar._cli import listen_address
from entra_mw.testing import FakeEntra, Scenario, ServedFakeEntra

from ._procs import free_port, wait_until

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[FakeEntra, Scenario, ServedFakeEntra]]:
    fake = FakeEntra()
    scn = fake.quickstart()
    with fake.serve() as served:
        yield fake, scn, served
    fake.close()


def base_env(scn: Scenario, served: ServedFakeEntra) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AzureAd__Instance": served.base_url,
        "AzureAd__TenantId": scn.tenant.tenant_id,
        "AzureAd__ClientId": scn.blueprint.app_id,
        "AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
        "AzureAd__ClientCredentials__0__ClientSecret": scn.blueprint_secret,
        "DownstreamApis__graph__BaseUrl": "http://127.0.0.1:9/",
        "DownstreamApis__graph__Scopes__0": f"api://{scn.api.app_id}/.default",
        "DownstreamApis__graph__RequestAppToken": "true",
        "Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated": "true",
        "SSL_CERT_FILE": served.ca_file,
    }


def run_cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "entra_mw.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _healthy(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx2.TransportError:
        return False


@pytest.fixture(scope="module")
def sidecar(world: tuple[FakeEntra, Scenario, ServedFakeEntra]) -> Iterator[str]:
    _, scn, served = world
    port = free_port()
    env = base_env(scn, served)
    env["ASPNETCORE_URLS"] = f"http://localhost:{port}"  # the port comes from the official variable
    proc = run_cli(["sidecar"], env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), proc, "entra-mw sidecar")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.returncode in (0, -signal.SIGTERM), err
        assert "listening on http://127.0.0.1:" in out
        assert "Traceback" not in err


def test_healthz_validate_and_tokens(sidecar: str, world: tuple[FakeEntra, Scenario, ServedFakeEntra]) -> None:
    fake, scn, _ = world
    with httpx2.Client(base_url=sidecar, timeout=20) as client:
        assert client.get("/healthz").text == "Healthy"
        tc = fake.user_token(scn.user, client=scn.client, resource=scn.blueprint)
        validated = client.get("/Validate", headers={"Authorization": f"Bearer {tc}"})
        assert validated.status_code == 200
        assert validated.json()["claims"]["oid"] == scn.user.object_id
        app = client.get("/AuthorizationHeaderUnauthenticated/graph")
        assert fake.decode(app.json()["authorizationHeader"][7:])["azp"] == scn.blueprint.app_id
        agent = client.get(f"/AuthorizationHeaderUnauthenticated/graph?AgentIdentity={scn.agent.app_id}")
        assert fake.decode(agent.json()["authorizationHeader"][7:])["azp"] == scn.agent.app_id
        assert "server" not in app.headers
        assert client.get("/openapi/v1.json").status_code == 404  # Production by default


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"AzureAd__ClientId": ""}, "AzureAd__ClientId is required"),
        ({"AzureAd__ClientCredentials__0__SourceType": "KeyVault"}, "AzureAd__ClientCredentials__0__SourceType"),
        ({"Sidecar__AllowOutboundRedirects": "sometimes"}, "Sidecar__AllowOutboundRedirects must be true or false"),
        ({"SSL_CERT_FILE": "/nonexistent/ca.pem"}, "SSL_CERT_FILE"),
        ({"ASPNETCORE_URLS": "https://+:5001"}, "ASPNETCORE_URLS"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    world: tuple[FakeEntra, Scenario, ServedFakeEntra], change: dict[str, str], message: str
) -> None:
    _, scn, served = world
    env = {**base_env(scn, served), **change}
    proc = run_cli(["sidecar", "--port", str(free_port())], env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert err.startswith("entra-mw sidecar: ")
    assert message in err
    assert err.count("\n") == 1
    assert scn.blueprint_secret not in err


def test_help_documents_every_variable() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["sidecar", "--help"]) == 0
    text = out.getvalue()
    for name in (
        "--host",
        "--port",
        "AzureAd__Instance",
        "AzureAd__TenantId",
        "AzureAd__ClientId",
        "AzureAd__ClientCredentials__N__SourceType",
        "SignedAssertionFilePath",
        "SignedAssertionFileDiskPath",
        "AZURE_FEDERATED_TOKEN_FILE",
        "DownstreamApis__NAME__BaseUrl",
        "DownstreamApis__NAME__Scopes__N",
        "DownstreamApis__NAME__RequestAppToken",
        "Sidecar__AllowOverrides__GetAuthorizationHeader",
        "Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated",
        "Sidecar__AllowOverrides__CallDownstreamApi",
        "Sidecar__AllowOverrides__CallDownstreamApiUnauthenticated",
        "Sidecar__AllowOutboundRedirects",
        "ASPNETCORE_ENVIRONMENT",
        "ASPNETCORE_URLS",
        "TokenCache__RedisConnection",
        "SSL_CERT_FILE",
    ):
        assert name in text, name


@pytest.mark.parametrize(
    ("host", "port", "env", "expected"),
    [
        (None, None, {}, ("127.0.0.1", 5000)),
        (None, None, {"ASPNETCORE_URLS": "http://+:5000"}, ("0.0.0.0", 5000)),
        (None, None, {"ASPNETCORE_URLS": "http://*:8080;http://localhost:9"}, ("0.0.0.0", 8080)),
        (None, None, {"ASPNETCORE_URLS": "http://localhost:5001"}, ("127.0.0.1", 5001)),
        (None, None, {"ASPNETCORE_HTTP_PORTS": "8080"}, ("127.0.0.1", 8080)),
        ("127.0.0.1", 6000, {"ASPNETCORE_URLS": "http://+:5000"}, ("127.0.0.1", 6000)),
        ("::1", None, {}, ("::1", 5000)),
    ],
)
def test_listen_address(host: str | None, port: int | None, env: dict[str, str], expected: tuple[str, int]) -> None:
    assert listen_address(host, port, env) == expected
