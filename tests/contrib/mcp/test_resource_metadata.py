"""MCP without the SDK: the RFC 9728 document and route, and EntraMiddleware's challenges pointing at it."""

from __future__ import annotations

import json
import logging

import pytest

from entra_mw import ConfigurationError, InsufficientScope, Requirement
from entra_mw.asgi import EntraMiddleware
from entra_mw.resource_metadata import (
    ProtectedResource,
    ProtectedResourceMetadataMiddleware,
    ResourceRequirement,
    configuration_problems,
    full_scopes,
    metadata_url,
)

from ._asgi import Inner, Message, drive, http_scope
from .conftest import RESOURCE, McpEnv

pytestmark = pytest.mark.anyio

METADATA = "https://mcp.contoso.com/.well-known/oauth-protected-resource/mcp"


@pytest.mark.parametrize(
    ("resource", "url"),
    [
        ("https://mcp.contoso.com/mcp", METADATA),
        ("https://mcp.contoso.com", "https://mcp.contoso.com/.well-known/oauth-protected-resource"),
        ("https://mcp.contoso.com/", "https://mcp.contoso.com/.well-known/oauth-protected-resource"),
        ("https://mcp.contoso.com:8443/a/b", "https://mcp.contoso.com:8443/.well-known/oauth-protected-resource/a/b"),
    ],
)
def test_metadata_url_is_path_aware(resource: str, url: str) -> None:
    assert metadata_url(resource) == url


def test_document_for_an_entra_app(env: McpEnv, caplog: pytest.LogCaptureFixture) -> None:
    resource = ProtectedResource.for_auth(env.auth, resource=RESOURCE, scopes=["Tools.Use"], resource_name="Contoso")
    assert resource.document() == {
        "resource": RESOURCE,
        "authorization_servers": [f"https://login.microsoftonline.com/{env.scn.tenant.tenant_id}/v2.0"],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [f"{RESOURCE}/Tools.Use"],
        "resource_name": "Contoso",
    }
    assert resource.paths == ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource")
    challenge = resource.challenge()
    assert challenge.resource_metadata == METADATA and challenge.scope == (f"{RESOURCE}/Tools.Use",)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_problems_name_their_fix(env: McpEnv, caplog: pytest.LogCaptureFixture) -> None:
    assert configuration_problems(env.auth.config, RESOURCE, [f"{RESOURCE}/Tools.Use"]) == []
    assert configuration_problems(env.auth.config, f"api://{env.server.app_id}", []) == []  # the default App ID URI
    (bad,) = configuration_problems(env.auth.config, "https://other.contoso.com", [])
    assert "identifierUris" in bad
    (short,) = configuration_problems(None, RESOURCE, ["Tools.Use"])
    assert f"{RESOURCE}/Tools.Use" in short
    ProtectedResource.for_auth(env.auth, resource="https://other.contoso.com/mcp")
    assert any("not one of the app's App ID URIs" in r.getMessage() for r in caplog.records)
    assert full_scopes(RESOURCE + "/", "Tools.Use api://x/Y") == (f"{RESOURCE}/Tools.Use", "api://x/Y")


@pytest.mark.parametrize("tenant", ["contoso.onmicrosoft.com", "organizations", "common"])
def test_a_tenant_named_otherwise_than_by_its_id_warns(env: McpEnv, tenant: str) -> None:
    auth = env.engine(tenant_id=tenant)
    try:
        (problem,) = configuration_problems(auth.config, RESOURCE, [])
    finally:
        auth.close()
    assert "RFC 8414" in problem and "GUID" in problem


@pytest.mark.parametrize(
    "bad", ["", "mcp.contoso.com", "http://mcp.contoso.com", "https://mcp.contoso.com/?a=1", "https://u:p@h/x"]
)
def test_bad_resources(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        ProtectedResource(resource=bad, authorization_server="https://login.microsoftonline.com/t/v2.0")


def test_loopback_http_is_allowed_for_local_development() -> None:
    r = ProtectedResource(resource="http://127.0.0.1:8000/mcp", authorization_server="https://x/t/v2.0")
    assert r.metadata_url == "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"


def _resource(env: McpEnv) -> ProtectedResource:
    return ProtectedResource.for_auth(env.auth, resource=RESOURCE, scopes=["Tools.Use"])


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
async def test_route_serves_the_document_with_cors(env: McpEnv, path: str) -> None:
    inner = Inner()
    app = _resource(env).asgi(inner)
    result = await drive(app, http_scope("GET", path, headers=[(b"origin", b"https://claude.ai")]))
    assert result.status == 200 and inner.calls == 0
    assert json.loads(result.body) == _resource(env).document()
    assert result.header("access-control-allow-origin") == "*"
    assert result.header("content-type") == "application/json"
    assert result.header("cache-control") == "public, max-age=3600"
    assert result.header("content-length") == str(len(result.body))
    head = await drive(app, http_scope("HEAD", path))
    assert head.status == 200 and head.body == b"" and head.header("content-length") == str(len(result.body))


async def test_route_preflight_and_wrong_method(env: McpEnv) -> None:
    app = _resource(env).asgi(Inner())
    headers = [(b"origin", b"https://claude.ai"), (b"access-control-request-method", b"GET")]
    pre = await drive(app, http_scope("OPTIONS", "/.well-known/oauth-protected-resource/mcp", headers))
    assert pre.status == 204
    assert pre.header("access-control-allow-origin") == "*"
    assert pre.header("access-control-allow-methods") == "GET, OPTIONS"
    assert pre.header("access-control-allow-headers") == "mcp-protocol-version"
    post = await drive(app, http_scope("POST", "/.well-known/oauth-protected-resource/mcp"))
    assert post.status == 405 and post.header("allow") == "GET, HEAD, OPTIONS"


async def test_route_without_an_app(env: McpEnv) -> None:
    app = ProtectedResourceMetadataMiddleware(None, resource=_resource(env))
    assert (await drive(app, http_scope("GET", "/elsewhere"))).status == 404
    sent: list[Message] = []
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_requirement_names_full_scopes(env: McpEnv) -> None:
    resource = _resource(env)
    requirement = resource.requirement(roles=["Tools.All"])
    assert isinstance(requirement, Requirement)
    assert requirement.scopes == ("Tools.Use",) and requirement.roles == ("Tools.All",)
    principal = env.auth.validate(env.user_token("Forecast.Read"))
    with pytest.raises(InsufficientScope) as caught:
        requirement.check(principal)
    assert caught.value.scope == (f"{RESOURCE}/Tools.Use",)
    assert requirement.is_satisfied_by(env.auth.validate(env.user_token("Tools.Use")))
    tenants = ResourceRequirement(tenants=["00000000-0000-0000-0000-000000000000"], resource=RESOURCE)
    with pytest.raises(InsufficientScope) as caught:
        tenants.check(principal)
    assert caught.value.reason == "tenant_not_allowed"


async def test_no_sdk_mcp_server(env: McpEnv) -> None:
    """The plain middleware in MCP mode: challenges carry resource_metadata and scope; the document is public."""
    resource = _resource(env)
    inner = Inner()
    app = resource.asgi(
        EntraMiddleware(inner, auth=env.auth, requirement=resource.requirement(), challenge=resource.challenge())
    )
    missing = await drive(app, http_scope())
    assert missing.status == 401
    assert missing.header("www-authenticate") == f'Bearer scope="{RESOURCE}/Tools.Use", resource_metadata="{METADATA}"'
    bad = await drive(app, http_scope(headers=[(b"authorization", b"Bearer nope")]))
    challenge = bad.header("www-authenticate") or ""
    assert bad.status == 401 and 'error="invalid_token"' in challenge and f'resource_metadata="{METADATA}"' in challenge
    other = env.fake.user_token(env.scn.user, client=env.scn.client, resource=env.server, scopes=["Forecast.Read"])
    forbidden = await drive(app, http_scope(headers=[(b"authorization", f"Bearer {other}".encode())]))
    challenge = forbidden.header("www-authenticate") or ""
    # scp holds the short name; the challenge names the scope as the client must ask Entra for it.
    assert forbidden.status == 403 and 'error="insufficient_scope"' in challenge
    assert f'scope="{RESOURCE}/Tools.Use"' in challenge and f'resource_metadata="{METADATA}"' in challenge
    ok = await drive(app, http_scope(headers=[(b"authorization", f"Bearer {env.user_token('Tools.Use')}".encode())]))
    assert ok.status == 200 and inner.calls == 1
    doc = await drive(app, http_scope("GET", "/.well-known/oauth-protected-resource/mcp"))
    assert doc.status == 200 and inner.calls == 1


def test_no_sdk_mode_imports_no_framework() -> None:
    from ..._imports import loaded_after

    candidates = ("starlette", "mcp", "fastapi", "django", "flask", "msal")
    assert loaded_after("entra_mw.resource_metadata, entra_mw.asgi", candidates) == set()


def test_the_sdk_integration_imports_only_mcp() -> None:
    import ast
    from pathlib import Path

    import entra_mw.contrib.mcp as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0)
        for alias in node.names
    }
    assert imported & {"starlette", "fastapi", "django", "flask"} == set()
    assert "mcp" in imported
