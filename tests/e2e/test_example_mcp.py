"""The example MCP server under uvicorn on 127.0.0.1, FakeEntra served over HTTPS, driven by the ``mcp`` SDK's own
streamable-HTTP client."""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Iterator

import anyio
import httpx2
import pytest
from example_apps.mcp_server.__main__ import call_tools, main
from example_apps.mcp_server.local import LocalStack
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent

from tests.testing._browser import Browser, redirect_params
from tests.testing._mcp_storage import MemoryStorage

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # The system clock: the SDK's client, uvicorn and FakeEntra's served endpoints all live in real time.
    with LocalStack() as running:
        yield running


def _post(stack: LocalStack, token: str | None, body: object) -> httpx2.Response:
    headers = {"Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    with httpx2.Client(timeout=30) as client:
        return client.post(stack.resource, json=body, headers=headers)


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def _tools(stack: LocalStack, token: str, *calls: tuple[str, dict[str, object]]) -> list[str]:
    results = anyio.run(call_tools, stack.resource, token, list(calls))
    out = []
    for result in results:
        assert not result.is_error, result
        if result.structured_content is not None:
            out.append(json.dumps(result.structured_content))
        else:
            out.append(" ".join(c.text for c in result.content if isinstance(c, TextContent)))
    return out


def _sdk_refused(stack: LocalStack, token: str, calls: list[tuple[str, dict[str, object]]] | None = None) -> MCPError:
    """The SDK's client turns the HTTP refusal into an MCPError, raised out of its task groups."""
    with pytest.raises(BaseExceptionGroup) as caught:
        anyio.run(call_tools, stack.resource, token, calls or [])
    found: list[MCPError] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, MCPError):
            found.append(exc)
        for inner in getattr(exc, "exceptions", ()):
            walk(inner)

    walk(caught.value)
    assert found, caught.value
    return found[0]


def test_without_a_token_401_names_metadata_and_scope(stack: LocalStack) -> None:
    response = _post(stack, None, INITIALIZE)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert f'resource_metadata="{stack.base_url}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert f'scope="{stack.resource}/Tools.Use"' in challenge


def test_metadata_document_leads_to_entra(stack: LocalStack) -> None:
    with httpx2.Client(timeout=30) as client:
        response = client.get(f"{stack.base_url}/.well-known/oauth-protected-resource/mcp")
    assert response.status_code == 200
    doc = response.json()
    d = stack.directory
    issuer = f"{stack.served.base_url}{d.tenant.tenant_id}/v2.0"
    assert doc["resource"] == stack.resource == d.server.identifier_uris[0]  # the App ID URI
    assert doc["authorization_servers"] == [issuer]
    assert doc["scopes_supported"] == [f"{stack.resource}/Tools.Use"]
    assert doc["bearer_methods_supported"] == ["header"]
    # What an MCP client does next: the authorization server's metadata, from FakeEntra.
    with httpx2.Client(verify=stack.served.ssl_context(), timeout=30) as client:
        oidc = client.get(f"{issuer}/.well-known/openid-configuration").json()
    assert oidc["issuer"] == issuer
    assert oidc["token_endpoint"].startswith(stack.served.base_url)


def test_v2_token_with_the_client_id_audience_lists_and_calls_tools(stack: LocalStack) -> None:
    token = stack.sign_in(["Tools.Use"])
    assert stack.fake.decode(token)["aud"] == stack.directory.server.app_id
    (whoami,) = _tools(stack, token, ("whoami", {}))
    assert json.loads(whoami)["oid"] == stack.directory.user.object_id


def test_list_tools_names_both_tools(stack: LocalStack) -> None:
    token = stack.sign_in(["Tools.Use"])

    async def names() -> list[str]:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
            streamable_http_client(stack.resource, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return sorted(t.name for t in (await session.list_tools()).tools)

    assert anyio.run(names) == ["forecast", "whoami"]


@pytest.mark.parametrize("case", ["other_audience", "expired", "other_tenant", "no_server_scope"])
def test_refused_tokens(stack: LocalStack, case: str) -> None:
    fake, d = stack.fake, stack.directory
    if case == "other_audience":
        token = fake.user_token(d.user, client=d.client, resource=d.forecast_api)
        status = 401
    elif case == "expired":
        now = int(time.time())
        token = fake.user_token(
            d.user,
            client=d.client,
            resource=d.server,
            extra_claims={"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600},
        )
        status = 401
    elif case == "other_tenant":
        other = fake.add_tenant(domain=f"fabrikam-{case}.onmicrosoft.com")
        token = fake.issue_token(tenant=other, resource=d.server, client=d.client, user=d.user)
        status = 401
    else:
        token = stack.sign_in(["Forecast.Read"])
        status = 403  # a valid token without the server-wide scope
    response = _post(stack, token, INITIALIZE)
    assert response.status_code == status
    challenge = response.headers["www-authenticate"]
    assert f'scope="{stack.resource}/Tools.Use"' in challenge
    assert "resource_metadata=" in challenge
    _sdk_refused(stack, token)


def test_tool_scope_is_a_403_naming_it(stack: LocalStack) -> None:
    token = stack.sign_in(["Tools.Use"])
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "forecast", "arguments": {"city": "x"}},
    }
    response = _post(stack, token, call)
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope"')
    assert f'scope="{stack.resource}/Tools.Use {stack.resource}/Forecast.Read"' in challenge
    assert f'resource_metadata="{stack.base_url}/.well-known/oauth-protected-resource/mcp"' in challenge
    # The SDK's client is refused the same call.
    _sdk_refused(stack, token, [("forecast", {"city": "x"})])


def test_forecast_calls_the_api_on_behalf_of_the_caller(stack: LocalStack) -> None:
    token = stack.sign_in(["Tools.Use", "Forecast.Read"])
    before = stack.fake.request_count("token:jwt_bearer")
    seen = len(stack.recorder.callers)
    (result,) = _tools(stack, token, ("forecast", {"city": "Seattle"}))
    assert json.loads(result) == {"city": "Seattle", "forecast": "sunny", "for": "Alice Example"}
    assert stack.fake.request_count("token:jwt_bearer") == before + 1
    caller = stack.recorder.callers[seen]
    d = stack.directory
    assert caller["aud"] == d.forecast_api.app_id
    assert caller["azp"] == d.server.app_id  # the MCP server's app, acting for alice
    assert caller["oid"] == d.user.object_id
    assert hashlib.sha256(token.encode()).hexdigest() not in stack.recorder.token_digests


def test_one_command_walkthrough() -> None:
    out = io.StringIO()
    assert main([], out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "All steps worked." in text
    assert "forecast -> 403" in text
    assert JWT.search(text) is None, "a token was printed"


# -- the SDK's OAuth client: discovery, sign-in through FakeEntra, step-up ------------------------------------------


def test_the_sdk_oauth_client_signs_in_and_steps_up(stack: LocalStack) -> None:
    """From nothing but the server's URL: the 401, the metadata document, FakeEntra's sign-in (authorization code,
    PKCE, RFC 8707 resource) for Tools.Use, then the per-tool 403 and a second sign-in for Forecast.Read."""
    d = stack.directory
    person = Browser(httpx2.Client(verify=stack.served.ssl_context(), timeout=30))
    authorize_urls: list[str] = []
    consent_pages: list[str] = []
    answer: dict[str, str] = {}

    async def redirect_handler(url: str) -> None:
        authorize_urls.append(url)
        page = person.open(url)
        if page.status_code == 200 and 'name="password"' in page.text:  # no session yet: the sign-in page
            page = person.sign_in(page, d.user.upn, d.password)
        if page.status_code == 200:  # the SDK asks for offline_access, so prompt=consent: the consent page
            consent_pages.append(page.text)
            page = person.consent(page)
        answer.clear()
        answer.update(redirect_params(page))

    async def callback_handler() -> AuthorizationCodeResult:
        assert "code" in answer, answer
        return AuthorizationCodeResult(code=answer["code"], state=answer.get("state"))

    redirect = "http://localhost:33418/callback"
    provider = OAuthClientProvider(
        server_url=stack.resource,
        client_metadata=OAuthClientMetadata(
            redirect_uris=[redirect],  # type: ignore[list-item]
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
            client_name="example MCP client",
        ),
        storage=MemoryStorage(
            OAuthClientInformationFull(
                client_id=d.client.app_id,
                redirect_uris=[redirect],  # type: ignore[list-item]
                token_endpoint_auth_method="none",
            )
        ),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )

    async def run() -> tuple[str, str]:
        async with (
            httpx2.AsyncClient(auth=provider, verify=stack.served.ssl_context(), timeout=30) as http,
            streamable_http_client(stack.resource, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            whoami = await session.call_tool("whoami", {})
            forecast = await session.call_tool("forecast", {"city": "Oslo"})
        assert not whoami.is_error and not forecast.is_error, (whoami, forecast)
        return json.dumps(whoami.structured_content), json.dumps(forecast.structured_content)

    try:
        whoami, forecast = anyio.run(run)
    finally:
        person.client.close()
    assert json.loads(whoami)["oid"] == d.user.object_id
    assert json.loads(forecast)["city"] == "Oslo"
    assert len(authorize_urls) == 2  # the first sign-in, then the step-up
    first, second = (httpx2.URL(u) for u in authorize_urls)
    assert first.params["resource"] == second.params["resource"] == stack.resource
    assert first.params["code_challenge_method"] == "S256"
    # The scopes the challenge and the document named, plus offline_access the SDK adds for a refresh token.
    assert set(first.params["scope"].split()) == {f"{stack.resource}/Tools.Use", "offline_access"}
    assert set(second.params["scope"].split()) >= {f"{stack.resource}/Tools.Use", f"{stack.resource}/Forecast.Read"}
    assert str(first).startswith(stack.served.authorize_endpoint(d.tenant.tenant_id))
    # The client is pre-authorized for the server's scopes; the consent pages are the ones prompt=consent forces.
    assert len(consent_pages) == 2
