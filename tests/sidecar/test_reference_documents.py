"""The documents users follow, used as they are written: the Kubernetes article's ConfigMap (only what points at the
cloud is pointed at loopback) and its curl commands, the FAQ's ``/Validate`` command, run verbatim by ``curl``
(a curlrc maps ``localhost:5000`` to the test's sidecar)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from entra_mw.testing import FakeEntra, Scenario, ServedFakeEntra

from ._support import Recorder, running_sidecar, user_token

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]

AGENT_ID = "f3897825-fd03-45f5-90eb-fdbf26135650"  # the article's agent identity
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

# The ConfigMap of agent-id-on-kubernetes-part3-sidecar.md, as written (the ${...} are filled by its deploy.sh).
CONFIGMAP = """
  # Azure AD / Entra configuration
  AzureAd__Instance: "https://login.microsoftonline.com/"
  AzureAd__TenantId: "${TENANT_ID}"
  AzureAd__ClientId: "${CLIENT_ID}"

  # Credential source type
  AzureAd__ClientCredentials__0__SourceType: "ClientSecret"

  # Downstream API configuration (example: Microsoft Graph)
  DownstreamApis__graph__BaseUrl: "https://graph.microsoft.com/v1.0/"
  DownstreamApis__graph__Scopes__0: "https://graph.microsoft.com/.default"
  # Default to App Tokens at the moment
  DownstreamApis__graph__RequestAppToken: "true"

  # ASP.NET Core settings
  ASPNETCORE_ENVIRONMENT: "Production"
  ASPNETCORE_URLS: "http://+:5000"
"""

# The article's commands, verbatim after `kubectl exec ... -c app --` (the FAQ's for /Validate).
HEALTH = "curl localhost:5000/healthz"
BLUEPRINT = "curl -v localhost:5000/AuthorizationHeaderUnauthenticated/graph"
AGENT = 'curl -v "localhost:5000/AuthorizationHeaderUnauthenticated/graph?AgentIdentity=f3897825-fd03-45f5-90eb-fdbf26135650"'  # noqa: E501
CALL = (
    'curl -v -X POST "localhost:5000/DownstreamApiUnauthenticated/graph?AgentIdentity=f3897825-fd03-45f5-90eb-fdbf26135650"'  # noqa: E501
    ' -H "Content-Type: application/json"'
)
AGENT_OBO = """\
curl -v "localhost:5000/AuthorizationHeader/graph?optionsOverride.RequestAppToken=false&AgentIdentity=f3897825-fd03-45f5-90eb-fdbf26135650" \\
  -H "Authorization: Bearer $USER_TOKEN"
"""  # noqa: E501
VALIDATE = """\
curl -H "Authorization: Bearer <token>" \\
     http://localhost:5000/Validate
"""


def configmap(**values: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in CONFIGMAP.splitlines():
        match = re.match(r'^\s*([A-Za-z_][\w]*):\s*"(.*)"\s*$', line)
        if match:
            env[match.group(1)] = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], match.group(2))
    return env


@pytest.fixture(scope="module")
def world(fake: FakeEntra, scn: Scenario) -> Scenario:
    """The article's tenant: Microsoft Graph as a resource, and its agent identity under the blueprint."""
    graph = fake.add_app(
        scn.tenant,
        display_name="Microsoft Graph",
        app_id=GRAPH_APP_ID,
        identifier_uris=["https://graph.microsoft.com"],
        scopes=("User.Read",),
        app_roles=("User.Read.All",),
    )
    agent = fake.add_agent_identity(scn.blueprint, app_id=AGENT_ID, display_name="article agent")
    for client in (scn.blueprint, agent):
        fake.grant_app_roles(client, graph, graph.app_roles)
        fake.grant_consent(client, graph, graph.scopes)
    fake.grant_consent(agent, graph, graph.scopes)
    return scn


@pytest.fixture(scope="module")
def sidecar_port(served: ServedFakeEntra, world: Scenario, api_url: str) -> Iterator[int]:
    env = configmap(TENANT_ID=world.tenant.tenant_id, CLIENT_ID=world.blueprint.app_id)
    # The secret comes from the article's sidecar-secret; the cloud endpoints become the loopback ones.
    env["AzureAd__ClientCredentials__0__ClientSecret"] = world.blueprint_secret
    env["AzureAd__Instance"] = served.base_url
    env["DownstreamApis__graph__BaseUrl"] = f"{api_url}/echo/v1.0/"
    env["SSL_CERT_FILE"] = served.ca_file
    with running_sidecar(env) as url:
        port = urlsplit(url).port
        assert port is not None
        yield port


def curl(command: str, port: int, tmp_path: Path, **env: str) -> tuple[str, str]:
    """Run ``command`` as a shell would; a curlrc sends ``localhost:5000`` to the test's sidecar."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    (tmp_path / ".curlrc").write_text(f"connect-to = localhost:5000:127.0.0.1:{port}\n--silent\n--max-time 30\n")
    done = subprocess.run(
        ["bash", "-c", command],
        env={"PATH": "/usr/bin:/bin", "CURL_HOME": str(tmp_path), "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def header_claims(fake: FakeEntra, stdout: str) -> dict[str, object]:
    return fake.decode(json.loads(stdout)["authorizationHeader"].split(" ", 1)[1])


def test_healthz(sidecar_port: int, tmp_path: Path) -> None:
    out, _ = curl(HEALTH, sidecar_port, tmp_path)
    assert out == "Healthy"


def test_blueprint_token(sidecar_port: int, tmp_path: Path, fake: FakeEntra, world: Scenario) -> None:
    out, err = curl(BLUEPRINT, sidecar_port, tmp_path)
    assert "< HTTP/1.1 200" in err
    claims = header_claims(fake, out)
    assert claims["aud"] in (GRAPH_APP_ID, "https://graph.microsoft.com")
    assert claims["azp"] == world.blueprint.app_id


def test_agent_token_is_the_blueprints_with_the_default_gate(
    sidecar_port: int, tmp_path: Path, fake: FakeEntra, world: Scenario
) -> None:
    # 1.1.x: AgentIdentity is ignored on the unauthenticated route unless the operator opts in.
    out, _ = curl(AGENT, sidecar_port, tmp_path)
    assert header_claims(fake, out)["azp"] == world.blueprint.app_id


def test_agent_token_with_the_override_enabled(
    served: ServedFakeEntra, world: Scenario, api_url: str, tmp_path: Path, fake: FakeEntra
) -> None:
    env = configmap(TENANT_ID=world.tenant.tenant_id, CLIENT_ID=world.blueprint.app_id)
    env.update(
        AzureAd__ClientCredentials__0__ClientSecret=world.blueprint_secret,
        AzureAd__Instance=served.base_url,
        DownstreamApis__graph__BaseUrl=f"{api_url}/echo/v1.0/",
        SSL_CERT_FILE=served.ca_file,
        Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated="true",
        Sidecar__AllowOverrides__CallDownstreamApiUnauthenticated="true",
    )
    with running_sidecar(env) as url:
        port = urlsplit(url).port
        assert port is not None
        out, _ = curl(AGENT, port, tmp_path)
        claims = header_claims(fake, out)
        assert claims["azp"] == AGENT_ID
        assert claims["aud"] in (GRAPH_APP_ID, "https://graph.microsoft.com")
        assert claims["idtyp"] == "app"
        out, err = curl(CALL, port, tmp_path)
        assert "< HTTP/1.1 200" in err
        envelope = json.loads(out)
        assert envelope["statusCode"] == 200
        assert json.loads(envelope["content"])["path"] == "/echo/v1.0"


def test_downstream_call(sidecar_port: int, tmp_path: Path, recorder: Recorder, world: Scenario) -> None:
    out, _ = curl(CALL, sidecar_port, tmp_path)
    assert json.loads(out)["statusCode"] == 200
    assert recorder.last().token_claims["azp"] == world.blueprint.app_id


def test_agent_obo_command(sidecar_port: int, tmp_path: Path, fake: FakeEntra, world: Scenario) -> None:
    # The ConfigMap says RequestAppToken=true and an override can only turn it on: the agent's app token.
    out, err = curl(AGENT_OBO, sidecar_port, tmp_path, USER_TOKEN=user_token(fake, world))
    assert "< HTTP/1.1 200" in err
    claims = header_claims(fake, out)
    assert claims["azp"] == AGENT_ID
    assert claims["idtyp"] == "app"


def test_faq_validate_command(sidecar_port: int, tmp_path: Path, fake: FakeEntra, world: Scenario) -> None:
    token = user_token(fake, world)
    out, _ = curl(VALIDATE.replace("<token>", token), sidecar_port, tmp_path)
    body = json.loads(out)
    assert body["protocol"] == "Bearer"
    assert body["claims"]["oid"] == world.user.object_id


# agent-id-on-kubernetes-part4-workload-identity.md: the ConfigMap's credential becomes the projected token.
K8S_ISSUER = "https://oidc.kind.example/cluster/"
K8S_SUBJECT = "system:serviceaccount:entra-demo:demo-app"


@pytest.mark.parametrize(
    "file_key",
    [
        "AzureAd__ClientCredentials__0__SignedAssertionFileDiskPath",  # the article's (and the code's) name
        "AzureAd__ClientCredentials__0__SignedAssertionFilePath",  # the official README's name
        None,  # neither: AZURE_FEDERATED_TOKEN_FILE, as the workload-identity webhook sets it
    ],
)
def test_workload_identity_configmap(
    served: ServedFakeEntra,
    world: Scenario,
    api_url: str,
    tmp_path: Path,
    fake: FakeEntra,
    monkeypatch: pytest.MonkeyPatch,
    file_key: str | None,
) -> None:
    from entra_mw.testing._token_endpoint import fake_oidc_issuer

    issuer = fake_oidc_issuer(fake, K8S_ISSUER)
    if not any(f.issuer == K8S_ISSUER for f in world.blueprint.federated_credentials):
        fake.add_federated_credential(world.blueprint, issuer=K8S_ISSUER, subject=K8S_SUBJECT)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(issuer.mint(K8S_SUBJECT, "api://AzureADTokenExchange"))
    env = configmap(TENANT_ID=world.tenant.tenant_id, CLIENT_ID=world.blueprint.app_id)
    env.update(
        AzureAd__ClientCredentials__0__SourceType="SignedAssertionFilePath",
        AzureAd__Instance=served.base_url,
        DownstreamApis__graph__BaseUrl=f"{api_url}/echo/v1.0/",
        SSL_CERT_FILE=served.ca_file,
    )
    if file_key is None:
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    else:
        env[file_key] = str(token_file)
    with running_sidecar(env) as url:
        port = urlsplit(url).port
        assert port is not None
        out, err = curl(BLUEPRINT, port, tmp_path)
        assert "< HTTP/1.1 200" in err, out
        assert header_claims(fake, out)["azp"] == world.blueprint.app_id
