"""Inside a tool: current_context/current_principal/current_downstream and the per-tool require()."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from entra_mw.contrib.mcp import (
    EntraTokenVerifier,
    current_context,
    current_downstream,
    current_principal,
    require,
)

from .conftest import RESOURCE, McpEnv

pytestmark = pytest.mark.anyio


@contextmanager
def as_request(token: AccessToken | None) -> Iterator[None]:
    """What the SDK's AuthContextMiddleware does for a request."""
    reset = auth_context_var.set(AuthenticatedUser(token) if token is not None else None)
    try:
        yield
    finally:
        auth_context_var.reset(reset)


async def _access(env: McpEnv, *scopes: str) -> AccessToken:
    at = await EntraTokenVerifier(env.auth, resource=RESOURCE).verify_token(env.user_token(*scopes))
    assert at is not None
    return at


@require(scopes=["Forecast.Read"])
async def forecast(city: str, days: int = 1) -> str:
    """Tomorrow's forecast."""
    return f"{city}:{days}"


@require(roles=["Tools.All"])
def report() -> str:
    return "report"


async def test_caller_and_downstream_of_the_current_request(env: McpEnv) -> None:
    at = await _access(env, "Tools.Use")
    with as_request(at):
        assert current_principal().oid == env.scn.user.object_id
        downstream = current_downstream()
        assert downstream is current_downstream()  # one per request
        assert downstream.principal is current_context().principal
        header = await downstream.aauthorization_header("weather")
    assert header.startswith("Bearer ") and header != f"Bearer {at.token}"
    assert env.fake.request_count("token:jwt_bearer") == 1  # On-Behalf-Of, not the caller's token


async def test_outside_a_request_or_with_another_verifier(env: McpEnv) -> None:
    with pytest.raises(LookupError, match="no authenticated MCP request"):
        current_downstream()
    with (
        as_request(AccessToken(token="t", client_id="c", scopes=[])),
        pytest.raises(LookupError, match="token_verifier"),
    ):
        current_principal()


async def test_tool_without_its_scope_is_an_insufficient_scope_tool_error(env: McpEnv) -> None:
    with as_request(await _access(env, "Tools.Use")), pytest.raises(ToolError) as caught:
        await forecast("Paris")
    assert str(caught.value) == f"insufficient_scope: the tool 'forecast' needs scope=\"{RESOURCE}/Forecast.Read\""
    with as_request(await _access(env, "Tools.Use", "Forecast.Read")):
        assert await forecast("Paris", days=2) == "Paris:2"


async def test_sync_tool_and_roles(env: McpEnv) -> None:
    with as_request(await _access(env, "Tools.Use")), pytest.raises(ToolError, match=r'scope="Tools\.All"'):
        report()
    app_token = await EntraTokenVerifier(env.auth, resource=RESOURCE).verify_token(
        env.fake.app_token(env.scn.client, resource=env.server)
    )
    with as_request(app_token):
        assert report() == "report"


async def test_tool_with_no_caller_is_refused() -> None:
    with pytest.raises(ToolError, match="invalid_token"):
        await forecast("Paris")


async def test_the_sdk_still_sees_the_tools_signature(env: McpEnv) -> None:
    server = MCPServer("t")
    server.add_tool(forecast)
    (tool,) = await server.list_tools()
    assert tool.name == "forecast" and tool.description == "Tomorrow's forecast."
    assert tool.input_schema["required"] == ["city"]
    assert set(tool.input_schema["properties"]) == {"city", "days"}
    with as_request(await _access(env, "Tools.Use")), pytest.raises(ToolError) as caught:
        await server.call_tool("forecast", {"city": "Oslo"})
    # What the client reads in the isError result.
    assert str(caught.value).startswith("Error executing tool forecast: insufficient_scope: ")
