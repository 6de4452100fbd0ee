"""The official sidecar's public callers, replayed black-box against ``entra-mw sidecar``.

Each group below makes the HTTP requests one published client of the official *Microsoft Entra SDK for Agent ID*
container makes, built the way that client builds them (its parameter names and casing, how it encodes repeated
scopes, which header it forwards, which method it uses), and asserts exactly the response fields that client reads.
The requests are written here from reading those clients; none of their code is used.

* The Python adapter in Microsoft.Identity.Web's dev apps (``tests/DevApps/SidecarAdapter/python``): a ``requests``
  session, ``urljoin`` of the base URL and ``Validate`` / ``AuthorizationHeader/{api}`` / ``DownstreamApi/{api}``,
  the caller's whole ``Authorization`` value forwarded, every override it knows (``RequestAppToken=false`` sent
  explicitly); reads ``protocol``/``token``/``claims``, ``authorizationHeader``, ``statusCode``/``headers``/
  ``content``, and ProblemDetails ``detail``/``title``/``status`` on errors.
* Its TypeScript adapter (``.../typescript/src/sidecar.ts``): ``/Validate`` with the agent parameters in the query;
  reads ``protocol``, ``token``, ``claims``; parses an error body only when it is JSON.
* The Microsoft 365 Agents SDK's sidecar provider (PyPI ``microsoft-agents-authentication-entra-auth-sidecar``):
  ``GET /AuthorizationHeaderUnauthenticated/{service}`` with ``AgentIdentity``, ``AgentUserId`` (a GUID) or
  ``AgentUsername``, percent-encoded ``optionsOverride.Scopes``, ``optionsOverride.RequestAppToken=true``,
  ``optionsOverride.AcquireTokenOptions.Tenant`` and ``...ForceRefresh=true``; ``GET /healthz`` for health; splits
  ``authorizationHeader`` into scheme and token and reads the token's ``exp``; maps 400/401/404 by status and
  reads only the ProblemDetails ``title``. Its ``agenticblueprint`` service is configured app-only with
  ``api://AzureAdTokenExchange/.default``, as its readme says.
* A published agent demo (razi-rais/3P-Agent-ID-Demo, ``sidecar/llm-agent``): ``AgentIdentity`` on the
  unauthenticated route with ``Host: localhost``; decodes the header's claims and looks for ``xms_par_app_azp``.
* The "Using from Python" and "Using from TypeScript" scenario pages of the official documentation: the caller's
  ``Authorization`` value forwarded as received, ``optionsOverride.Scopes`` repeated, ``...Tenant``,
  ``AgentIdentity`` + ``AgentUsername``; ``/DownstreamApi/{service}`` called with the *downstream* method as the
  request's own method (``GET`` for reads) and ``optionsOverride.HttpMethod`` when it is not ``GET``,
  ``optionsOverride.RelativePath`` carrying its own query (``me/messages?$top=10``), a JSON body with
  ``Content-Type: application/json``; reads ``statusCode`` and ``json.loads(content)``.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import requests

from entra_mw.testing import FakeEntra, Scenario, ServedFakeEntra

from ._support import Recorder, running_sidecar, sidecar_env, user_token

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]

EXCHANGE_SCOPE_AS_WRITTEN = "api://AzureAdTokenExchange/.default"  # the Agents SDK readme's casing


def _claims(fake: FakeEntra, authorization_header: str) -> dict[str, Any]:
    scheme, _, token = authorization_header.partition(" ")
    assert scheme == "Bearer"
    return fake.decode(token)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


# -- Microsoft.Identity.Web dev apps: the Python adapter ----------------------------------------------------------


def _adapter_url(base: str, path: str) -> str:
    return urllib.parse.urljoin(base.rstrip("/") + "/", path)


def test_python_adapter_validate(session: requests.Session, sidecar: str, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    response = session.get(_adapter_url(sidecar, "Validate"), headers={"Authorization": f"Bearer {tc}"}, timeout=20)
    assert response.status_code < 400
    data = response.json()
    assert data["protocol"] == "Bearer"
    assert data["token"] == tc
    assert isinstance(data.get("claims", {}), dict)
    assert data["claims"]["oid"] == scn.user.object_id
    assert data["claims"]["scp"] == "access_agent"


def test_python_adapter_authorization_header_with_every_option(
    session: requests.Session, sidecar: str, fake: FakeEntra, scn: Scenario
) -> None:
    tc = user_token(fake, scn)
    params: dict[str, Any] = {
        "AgentIdentity": scn.agent.app_id,
        "optionsOverride.Scopes": [f"api://{scn.api.app_id}/Weather.Read"],
        "optionsOverride.RequestAppToken": "false",
        "optionsOverride.BaseUrl": "https://elsewhere.example/",  # ignored, as by the official sidecar
        "optionsOverride.AcquireTokenOptions.Tenant": scn.tenant.tenant_id,
        "optionsOverride.AcquireTokenOptions.ForceRefresh": "false",
        "optionsOverride.AcquireTokenOptions.CorrelationId": str(uuid.uuid4()),
    }
    response = session.get(
        _adapter_url(sidecar, "AuthorizationHeader/weather"),
        headers={"Authorization": f"Bearer {tc}"},
        params=params,
        timeout=20,
    )
    assert response.status_code == 200, response.text
    claims = _claims(fake, response.json()["authorizationHeader"])
    # AgentIdentity with a caller and a delegated API: agent On-Behalf-Of (spec §1.4).
    assert claims["azp"] == scn.agent.app_id
    assert claims["oid"] == scn.user.object_id
    assert claims["xms_par_app_azp"] == scn.blueprint.app_id


def test_python_adapter_unauthenticated_header(session: requests.Session, sidecar: str, fake: FakeEntra) -> None:
    response = session.get(_adapter_url(sidecar, "AuthorizationHeaderUnauthenticated/graph"), timeout=20)
    assert response.status_code == 200, response.text
    assert _claims(fake, response.json()["authorizationHeader"])["idtyp"] == "app"


def test_python_adapter_invoke_downstream(
    session: requests.Session, sidecar: str, fake: FakeEntra, scn: Scenario, recorder: Recorder
) -> None:
    tc = user_token(fake, scn)
    response = session.post(
        _adapter_url(sidecar, "DownstreamApi/weather"),
        headers={"Authorization": f"Bearer {tc}"},
        params={"optionsOverride.RelativePath": "forecast", "optionsOverride.HttpMethod": "POST"},
        json={"city": "Oslo"},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["statusCode"] == 200
    assert data.get("headers", {})["Content-Type"] == ["application/json"]
    assert json.loads(json.loads(data.get("content"))["body"]) == {"city": "Oslo"}
    sent = recorder.last()
    assert (sent.method, sent.path) == ("POST", "/echo/forecast")
    assert sent.token_claims["oid"] == scn.user.object_id


def test_python_adapter_invoke_downstream_unauthenticated_without_body(
    session: requests.Session, sidecar: str, recorder: Recorder, scn: Scenario
) -> None:
    # json_body=None: requests sends no body and no Content-Type.
    response = session.post(_adapter_url(sidecar, "DownstreamApiUnauthenticated/graph"), timeout=20)
    assert response.status_code == 200, response.text
    assert response.json()["statusCode"] == 200
    assert recorder.last().method == "GET"
    assert recorder.last().token_claims["azp"] == scn.blueprint.app_id


def test_python_adapter_reads_problem_details(session: requests.Session, sidecar: str) -> None:
    response = session.get(_adapter_url(sidecar, "AuthorizationHeaderUnauthenticated/not-configured"), timeout=20)
    assert response.status_code == 400
    problem = response.json()
    assert problem["status"] == 400
    assert problem["title"] == "Bad Request"
    assert problem["detail"].startswith("No scopes found for the API 'not-configured'")
    # No token: 401 with no body, so such a client falls back to its own message.
    bare = session.get(_adapter_url(sidecar, "Validate"), timeout=20)
    assert bare.status_code == 401
    assert bare.content == b""
    assert bare.headers["WWW-Authenticate"] == "Bearer"


# -- Microsoft.Identity.Web dev apps: the TypeScript adapter -------------------------------------------------------


def test_typescript_adapter_validate_with_agent_parameters(sidecar: str, fake: FakeEntra, scn: Scenario) -> None:
    tc = user_token(fake, scn)
    query = urllib.parse.urlencode({"AgentIdentity": scn.agent.app_id, "AgentUsername": scn.agent_user.upn})
    with httpx2.Client(timeout=20) as client:
        ok = client.get(f"{sidecar}/Validate?{query}", headers={"Authorization": f"Bearer {tc}"})
        refused = client.get(f"{sidecar}/Validate?{query}", headers={"Authorization": "Bearer not-a-jwt"})
    assert ok.is_success, ok.text
    body = ok.json()
    assert (body["protocol"], body["token"]) == ("Bearer", tc)
    assert body["claims"]["aud"] == scn.blueprint.app_id
    assert refused.status_code == 401
    assert "application/json" not in refused.headers.get("content-type", "")  # nothing for it to parse


# -- Microsoft 365 Agents SDK: the sidecar token provider ----------------------------------------------------------


@pytest.fixture(scope="module")
def agents_sdk_sidecar(served: ServedFakeEntra, scn: Scenario, api_url: str) -> Iterator[str]:
    """The sidecar as the Agents SDK provider expects it: a ``default`` service, an app-only ``agenticblueprint``
    service for the exchange audience, and agent parameters allowed on the unauthenticated route."""
    env = sidecar_env(
        served,
        scn,
        api_url,
        DownstreamApis__default__BaseUrl=f"{api_url}/echo/",
        DownstreamApis__default__Scopes__0=f"api://{scn.api.app_id}/.default",
        DownstreamApis__agenticblueprint__Scopes__0=EXCHANGE_SCOPE_AS_WRITTEN,
        DownstreamApis__agenticblueprint__RequestAppToken="true",
        Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated="true",
    )
    with running_sidecar(env) as url:
        yield url


def _sdk_query(**options: Any) -> str:
    """Query parameters in the provider's order and encoding (each value percent-encoded with nothing safe)."""
    parts: list[str] = []
    for name in ("AgentIdentity", "AgentUsername", "AgentUserId"):
        if options.get(name):
            parts.append(f"{name}={urllib.parse.quote(options[name], safe='')}")
    for scope in options.get("scopes") or []:
        parts.append(f"optionsOverride.Scopes={urllib.parse.quote(scope, safe='')}")
    if options.get("app") is True:
        parts.append("optionsOverride.RequestAppToken=true")
    if options.get("tenant"):
        parts.append(f"optionsOverride.AcquireTokenOptions.Tenant={urllib.parse.quote(options['tenant'], safe='')}")
    if options.get("force_refresh") is True:
        parts.append("optionsOverride.AcquireTokenOptions.ForceRefresh=true")
    return "&".join(parts)


def _sdk_token(base: str, service: str, **options: Any) -> tuple[str, str]:
    """One provider call: returns (scheme, token) as the provider parses ``authorizationHeader``."""
    url = f"{base}/AuthorizationHeaderUnauthenticated/{urllib.parse.quote(service, safe='')}"
    query = _sdk_query(**options)
    with httpx2.Client(timeout=20) as client:
        response = client.get(f"{url}?{query}" if query else url)
    assert response.is_success, (response.status_code, response.text)
    document = json.loads(response.text)
    scheme, separator, token = document["authorizationHeader"].strip().partition(" ")
    assert separator and token.strip()
    return scheme, token.strip()


def _exp(token: str) -> int:
    # What the provider does to size its cache: the payload's exp, without verification.
    payload = token.split(".")[1]
    exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    assert isinstance(exp, int)
    return exp


def test_agents_sdk_health(agents_sdk_sidecar: str) -> None:
    with httpx2.Client(timeout=20) as client:
        assert client.get(f"{agents_sdk_sidecar}/healthz").is_success


def test_agents_sdk_connection_token(agents_sdk_sidecar: str, fake: FakeEntra, scn: Scenario) -> None:
    scheme, token = _sdk_token(
        agents_sdk_sidecar, "default", scopes=[f"api://{scn.api.app_id}/.default"], app=True, force_refresh=True
    )
    claims = fake.decode(token)
    assert scheme == "Bearer"
    assert claims["idtyp"] == "app"
    assert claims["azp"] == scn.blueprint.app_id
    assert _exp(token) > claims["iat"]


def test_agents_sdk_agentic_instance_token(agents_sdk_sidecar: str, fake: FakeEntra, scn: Scenario) -> None:
    _, token = _sdk_token(
        agents_sdk_sidecar,
        "default",
        AgentIdentity=scn.agent.app_id,
        app=True,
        tenant=scn.tenant.tenant_id,
        scopes=[f"api://{scn.api.app_id}/.default"],
    )
    claims = fake.decode(token)
    assert claims["idtyp"] == "app"
    assert claims["azp"] == scn.agent.app_id
    assert claims["xms_par_app_azp"] == scn.blueprint.app_id
    assert claims["aud"] == scn.api.app_id


@pytest.mark.parametrize("by", ["AgentUserId", "AgentUsername"])
def test_agents_sdk_agentic_user_token(agents_sdk_sidecar: str, fake: FakeEntra, scn: Scenario, by: str) -> None:
    user = scn.agent_user.object_id if by == "AgentUserId" else scn.agent_user.upn
    _, token = _sdk_token(
        agents_sdk_sidecar,
        "default",
        AgentIdentity=scn.agent.app_id,
        tenant=scn.tenant.tenant_id,
        scopes=[f"api://{scn.api.app_id}/Weather.Read"],
        **{by: user},
    )
    claims = fake.decode(token)
    assert claims["oid"] == scn.agent_user.object_id
    assert claims["azp"] == scn.agent.app_id
    assert claims["scp"] == "Weather.Read"


def test_agents_sdk_agentic_application_token(agents_sdk_sidecar: str, fake: FakeEntra, scn: Scenario) -> None:
    # The "agenticblueprint" service: AgentIdentity on an app-only API for the exchange audience gives the
    # agent's own exchange token (T1 for the agent, then its client credentials for api://AzureADTokenExchange).
    _, token = _sdk_token(
        agents_sdk_sidecar, "agenticblueprint", AgentIdentity=scn.agent.app_id, tenant=scn.tenant.tenant_id
    )
    claims = fake.decode(token)
    assert claims["aud"] == "api://AzureADTokenExchange"
    assert claims["azp"] == scn.agent.app_id
    assert claims["idtyp"] == "app"


@pytest.mark.parametrize(
    ("service", "query", "status", "title"),
    [
        pytest.param("not-configured", "", 400, "Bad Request", id="unknown-service"),
        pytest.param(
            "default",
            f"AgentIdentity={uuid.uuid4()}&optionsOverride.RequestAppToken=true",
            401,
            "Unauthorized",
            id="unknown-agent",
        ),
    ],
)
def test_agents_sdk_errors_by_status_and_title(
    agents_sdk_sidecar: str, service: str, query: str, status: int, title: str
) -> None:
    with httpx2.Client(timeout=20) as client:
        response = client.get(f"{agents_sdk_sidecar}/AuthorizationHeaderUnauthenticated/{service}?{query}")
    assert response.status_code == status
    assert json.loads(response.text)["title"] == title


# -- the documentation's "Using from Python" / "Using from TypeScript" clients -------------------------------------


def test_docs_client_authorization_header(
    session: requests.Session, sidecar: str, fake: FakeEntra, scn: Scenario
) -> None:
    incoming = f"Bearer {user_token(fake, scn)}"  # the Authorization value the app received, forwarded as is
    plain = session.get(f"{sidecar}/AuthorizationHeader/weather", headers={"Authorization": incoming}, timeout=20)
    scoped = session.get(
        f"{sidecar}/AuthorizationHeader/weather",
        params={
            "optionsOverride.Scopes": [f"api://{scn.api.app_id}/Weather.Read"],
            "optionsOverride.AcquireTokenOptions.Tenant": scn.tenant.tenant_id,
            "AgentIdentity": scn.agent.app_id,
            "AgentUsername": scn.agent_user.upn,
        },
        headers={"Authorization": incoming},
        timeout=20,
    )
    plain.raise_for_status()
    scoped.raise_for_status()
    assert _claims(fake, plain.json()["authorizationHeader"])["azp"] == scn.blueprint.app_id
    agent_user = _claims(fake, scoped.json()["authorizationHeader"])
    assert agent_user["oid"] == scn.agent_user.object_id
    assert agent_user["azp"] == scn.agent.app_id


def _docs_call(
    session: requests.Session,
    sidecar: str,
    incoming: str,
    relative_path: str,
    method: str = "GET",
    body: dict[str, Any] | None = None,
) -> Any:
    params: dict[str, Any] = {"optionsOverride.RelativePath": relative_path}
    if method != "GET":
        params["optionsOverride.HttpMethod"] = method
    headers = {"Authorization": incoming}
    if body:
        headers["Content-Type"] = "application/json"
    response = session.request(
        method, f"{sidecar}/DownstreamApi/weather", params=params, headers=headers, json=body, timeout=20
    )
    response.raise_for_status()
    data = response.json()
    assert data["statusCode"] < 400, data
    return json.loads(data["content"])


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("POST", {"message": {"subject": "hi"}}), ("PUT", {"n": 1}), ("PATCH", {"n": 2}), ("DELETE", None)],
)
def test_docs_client_call_downstream_api(
    session: requests.Session,
    sidecar: str,
    fake: FakeEntra,
    scn: Scenario,
    recorder: Recorder,
    method: str,
    body: dict[str, Any] | None,
) -> None:
    incoming = f"Bearer {user_token(fake, scn)}"
    echoed = _docs_call(session, sidecar, incoming, "me/messages?$top=10", method, body)
    assert echoed["method"] == method
    assert echoed["path"] == "/echo/me/messages"
    assert urllib.parse.parse_qs(echoed["query"]) == {"$top": ["10"]}
    assert json.loads(echoed["body"] or "null") == body
    sent = recorder.last()
    assert sent.token_claims["oid"] == scn.user.object_id
    assert sent.token_claims["azp"] == scn.blueprint.app_id


def test_token_only_service_cannot_be_called(agents_sdk_sidecar: str) -> None:
    # The agenticblueprint service has no BaseUrl: headers only; a call is a 400 naming what is missing.
    with httpx2.Client(timeout=20) as client:
        response = client.post(f"{agents_sdk_sidecar}/DownstreamApiUnauthenticated/agenticblueprint")
    assert response.status_code == 400
    assert "BaseUrl" in response.json()["detail"]


# -- a published agent demo: chat agent → sidecar → weather API (razi-rais/3P-Agent-ID-Demo, sidecar/llm-agent) ----


def test_demo_agent_gets_an_agent_token_and_the_api_sees_the_agent(agents_sdk_sidecar: str, scn: Scenario) -> None:
    # The agent asks the unauthenticated route for AgentIdentity with "Host: localhost" (what 1.0.x's host filter
    # needed), decodes the header's claims for display, and hands the whole header value to its API, which marks
    # the caller an agent when xms_par_app_azp is present.
    with httpx2.Client(timeout=20) as client:
        response = client.get(
            f"{agents_sdk_sidecar}/AuthorizationHeaderUnauthenticated/graph?AgentIdentity={scn.agent.app_id}",
            headers={"Host": "localhost"},
        )
    assert response.status_code == 200, response.text
    header = response.json().get("authorizationHeader", "")
    token = header[len("Bearer ") :] if header.startswith("Bearer ") else header
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for name in ("aud", "iss", "oid", "roles", "tid", "exp", "iat"):
        assert name in claims, name
    assert claims["xms_par_app_azp"] == scn.blueprint.app_id
    assert claims["azp"] == scn.agent.app_id
