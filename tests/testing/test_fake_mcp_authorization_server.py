"""FakeEntra as the authorization server an MCP client finds: from the protected-resource document's
``authorization_servers`` (the tenant's v2 issuer) to the OpenID configuration, FakeEntra's endpoints, and a
token for the server's scope for a pre-registered public client — with the ``mcp`` SDK's own discovery helpers
and its OAuth client (authorization code + PKCE + RFC 8707 ``resource``) driving it."""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from entra_mw import EntraAuth, EntraConfig
from entra_mw.testing import App, FakeEntra, Scenario

from ._browser import Browser, redirect_params
from ._tok_support import claims_of, error_of, post

mcp_auth: types.ModuleType = pytest.importorskip("mcp.client.auth")
from mcp.client.auth.utils import (  # noqa: E402
    build_oauth_authorization_server_metadata_discovery_urls,
    validate_metadata_issuer,
)
from mcp.shared.auth import (  # noqa: E402
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
)

from ._mcp_storage import MemoryStorage  # noqa: E402

MCP_URL = "https://mcp.example.test/mcp"
MCP_RESOURCE = "https://mcp.example.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def s(fake_entra: FakeEntra) -> Scenario:
    return fake_entra.quickstart()


def mcp_api(fake: FakeEntra, s: Scenario) -> App:
    """The MCP server's app registration: its App ID URI is the server's URL, so RFC 8707 ``resource`` (the
    protected-resource document's ``resource``) and the scopes name the same resource."""
    return fake.add_app(s.tenant, display_name="weather-mcp", identifier_uris=(MCP_RESOURCE,), scopes=("tools.call",))


def discover(get: Callable[[str], httpx2.Response], issuer: str) -> OAuthMetadata:
    """What the mcp SDK client does with ``authorization_servers[0]``: try each well-known URL in its order."""
    for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, MCP_URL):
        response = get(url)
        if response.status_code == 200:
            metadata = OAuthMetadata.model_validate_json(response.content)
            validate_metadata_issuer(metadata, issuer)  # RFC 8414 §3.3, as the SDK checks it
            return metadata
        assert response.status_code == 404, (url, response.status_code)
    raise AssertionError("no metadata found")


def test_issuer_metadata_leads_an_mcp_client_to_fakeentra(fake_entra: FakeEntra, s: Scenario) -> None:
    issuer = f"https://login.microsoftonline.com/{s.tenant.tenant_id}/v2.0"
    with httpx2.Client(transport=fake_entra.transport) as client:
        metadata = discover(client.get, issuer)
    root = f"https://login.microsoftonline.com/{s.tenant.tenant_id}"
    assert str(metadata.authorization_endpoint) == f"{root}/oauth2/v2.0/authorize"
    assert str(metadata.token_endpoint) == f"{root}/oauth2/v2.0/token"
    assert "code" in metadata.response_types_supported
    assert metadata.registration_endpoint is None  # no dynamic client registration: clients are pre-registered


@pytest.mark.loopback
def test_served_as_issuer_the_mcp_client_stays_on_the_served_url() -> None:
    fake = FakeEntra()
    s = fake.quickstart()
    api = mcp_api(fake, s)
    cli = fake.add_public_client(s.tenant, display_name="mcp-inspector", redirect_uris=["http://localhost/callback"])
    tid = s.tenant.tenant_id
    with fake.serve(as_issuer=True) as served, httpx2.Client(verify=served.ssl_context()) as client:
        issuer = served.issuer(tid)
        assert issuer == f"{served.base_url}{tid}/v2.0"
        metadata = discover(client.get, issuer)
        assert str(metadata.token_endpoint) == f"{served.base_url}{tid}/oauth2/v2.0/token"
        assert str(metadata.authorization_endpoint) == served.authorize_endpoint(tid)
        jwks = client.get(json.loads(client.get(f"{issuer}/.well-known/openid-configuration").text)["jwks_uri"])
        assert jwks.json()["keys"][0]["issuer"] == issuer
        # the pre-registered public client gets a token for the server's scope (password grant, no secret)
        response = client.post(
            str(metadata.token_endpoint),
            data={
                "grant_type": "password",
                "client_id": cli.app_id,
                "username": s.user.upn,
                "password": s.user_password,
                "scope": f"{MCP_RESOURCE}/tools.call",
            },
        )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        auth = EntraAuth(
            EntraConfig(tenant_id=tid, client_id=api.app_id, instance=served.base_url), verify=served.ca_file
        )
        try:
            principal = auth.validate(token)
        finally:
            auth.close()
    assert principal["iss"] == issuer
    assert principal.scopes == frozenset({"tools.call"})
    assert principal["aud"] == api.app_id  # a v2 token's aud is the client id GUID, not the server's URL
    with pytest.raises(ValueError, match="already"):
        _two_issuers(fake)
    fake.close()


def _two_issuers(fake: FakeEntra) -> None:
    with fake.serve(as_issuer=True):
        fake.serve(as_issuer=True)


def test_public_client_password_grant_and_its_refusals(fake_entra: FakeEntra, s: Scenario) -> None:
    api = mcp_api(fake_entra, s)
    cli = fake_entra.add_public_client(s.tenant, redirect_uris=["http://localhost"])
    form = {
        "grant_type": "password",
        "client_id": cli.app_id,
        "username": s.user.upn,
        "password": s.user_password,
        "scope": f"{MCP_RESOURCE}/tools.call offline_access",
    }
    body = post(fake_entra, s.tenant.tenant_id, form).json()
    claims = claims_of(body["access_token"])
    assert (claims["aud"], claims["scp"], claims["azpacr"]) == (api.app_id, "tools.call", "0")
    assert "refresh_token" in body
    assert error_of(post(fake_entra, s.tenant.tenant_id, {**form, "client_secret": "x"})) == (
        401,
        "invalid_client",
        700025,
    )
    assert error_of(post(fake_entra, s.tenant.tenant_id, {**form, "resource": MCP_URL})) == (
        400,
        "invalid_target",
        9010010,
    )
    assert post(fake_entra, s.tenant.tenant_id, {**form, "resource": MCP_RESOURCE}).status_code == 200


# -- the mcp SDK's OAuth client against FakeEntra ----------------------------------------------------------------


class _Router(httpx2.AsyncBaseTransport):
    def __init__(self, routes: dict[str, httpx2.AsyncBaseTransport]) -> None:
        self.routes = routes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self.routes[request.url.host].handle_async_request(request)


def _mcp_server(
    fake: FakeEntra, api: App, tid: str, resource: str, seen: list[str], scope: str = f"{MCP_RESOURCE}/tools.call"
) -> httpx2.MockTransport:
    """A stand-in protected MCP endpoint: 401 + RFC 9728 metadata without a token, the caller's oid with one."""
    auth = EntraAuth(EntraConfig(tenant_id=tid, client_id=api.app_id), transport=fake.transport, clock=fake.clock)
    prm = {
        "resource": resource,
        "authorization_servers": [f"https://login.microsoftonline.com/{tid}/v2.0"],
        "scopes_supported": [scope],
        "bearer_methods_supported": ["header"],
    }

    def handle(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.startswith("/.well-known/oauth-protected-resource"):
            return httpx2.Response(200, json=prm)
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            challenge = (
                'Bearer resource_metadata="https://mcp.example.test/.well-known/oauth-protected-resource/mcp", '
                f'scope="{scope}"'
            )
            return httpx2.Response(401, headers={"WWW-Authenticate": challenge})
        principal = auth.validate(header[len("Bearer ") :])
        seen.append(principal.oid or "")
        return httpx2.Response(200, json={"oid": principal.oid, "scopes": sorted(principal.scopes)})

    return httpx2.MockTransport(handle)


def _provider(fake: FakeEntra, s: Scenario, cli: App, events: list[str]) -> Any:
    person = Browser(httpx2.Client(transport=fake.transport))
    answer: dict[str, str] = {}

    async def redirect_handler(url: str) -> None:
        events.append(url)
        page = person.open(url)
        if page.status_code == 302:
            answer.update(redirect_params(page))
            return
        after = person.sign_in(page, s.user.upn, s.user_password)
        if after.status_code == 200:
            after = person.consent(after)
        answer.update(redirect_params(after))

    async def callback_handler() -> AuthorizationCodeResult:
        if "error" in answer:
            raise RuntimeError(f"{answer['error']}: {answer['error_description'].splitlines()[0]}")
        return AuthorizationCodeResult(code=answer["code"], state=answer.get("state"))

    metadata = OAuthClientMetadata(
        redirect_uris=["http://localhost:33418/callback"],  # type: ignore[list-item]
        token_endpoint_auth_method="none",
        grant_types=["authorization_code", "refresh_token"],
        scope=f"{MCP_RESOURCE}/tools.call",
        client_name="mcp test client",
    )
    info = OAuthClientInformationFull(
        client_id=cli.app_id,
        redirect_uris=["http://localhost:33418/callback"],  # type: ignore[list-item]
        token_endpoint_auth_method="none",
    )
    return mcp_auth.OAuthClientProvider(
        server_url=MCP_URL,
        client_metadata=metadata,
        storage=MemoryStorage(info),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    ), person


@pytest.mark.anyio
async def test_the_mcp_sdk_oauth_client_signs_in_through_fakeentra(fake_entra: FakeEntra, s: Scenario) -> None:
    api = mcp_api(fake_entra, s)
    cli = fake_entra.add_public_client(s.tenant, display_name="mcp-client", redirect_uris=["http://localhost/callback"])
    seen: list[str] = []
    events: list[str] = []
    provider, person = _provider(fake_entra, s, cli, events)
    routes = {
        "mcp.example.test": _mcp_server(fake_entra, api, s.tenant.tenant_id, MCP_RESOURCE, seen),
        "login.microsoftonline.com": fake_entra.async_transport,
    }
    async with httpx2.AsyncClient(transport=_Router(routes), auth=provider) as client:
        first = await client.post(MCP_URL, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        second = await client.post(MCP_URL, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    person.client.close()
    assert first.status_code == 200, first.text
    assert first.json() == {"oid": s.user.object_id, "scopes": ["tools.call"]}
    assert second.status_code == 200
    assert seen == [s.user.object_id, s.user.object_id]
    assert len(events) == 1  # signed in once; the second call reused the token
    authorize = httpx2.URL(events[0])
    assert authorize.host == "login.microsoftonline.com"
    assert authorize.params["resource"] == MCP_RESOURCE
    assert authorize.params["code_challenge_method"] == "S256"
    assert fake_entra.request_count("token:authorization_code") == 1


@pytest.mark.anyio
async def test_a_resource_that_is_not_an_app_id_uri_fails_as_entra_fails(fake_entra: FakeEntra, s: Scenario) -> None:
    # The protected-resource document names the server URL, which is not an App ID URI of the app: Entra
    # answers AADSTS9010010 at /authorize, and the client cannot sign in.
    api = fake_entra.add_app(s.tenant, display_name="weather-mcp", scopes=("tools.call",))  # App ID URI api://...
    cli = fake_entra.add_public_client(s.tenant, redirect_uris=["http://localhost/callback"])
    provider, person = _provider(fake_entra, s, cli, [])
    scope = f"api://{api.app_id}/tools.call"
    routes = {
        "mcp.example.test": _mcp_server(fake_entra, api, s.tenant.tenant_id, MCP_URL, [], scope),
        "login.microsoftonline.com": fake_entra.async_transport,
    }
    with pytest.raises(RuntimeError, match="invalid_target: AADSTS9010010"):
        async with httpx2.AsyncClient(transport=_Router(routes), auth=provider) as client:
            await client.post(MCP_URL, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    person.client.close()
