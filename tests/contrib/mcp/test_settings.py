"""auth_settings: the SDK's AuthSettings built right for Entra, and the start-up check with its fix."""

from __future__ import annotations

import logging

import pytest
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from entra_mw import ConfigurationError
from entra_mw.contrib.mcp import EntraTokenVerifier, ScopeChallengeMiddleware, auth_settings

from .conftest import RESOURCE, McpEnv


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "entra_mw.mcp" and r.levelno == logging.WARNING]


def test_settings_for_entra(env: McpEnv, caplog: pytest.LogCaptureFixture) -> None:
    settings = auth_settings(env.auth, resource_server_url=RESOURCE, scopes=["Tools.Use", f"{RESOURCE}/Forecast.Read"])
    tid = env.scn.tenant.tenant_id
    assert str(settings.issuer_url) == f"https://login.microsoftonline.com/{tid}/v2.0"
    assert str(settings.resource_server_url) == RESOURCE
    assert settings.required_scopes == [f"{RESOURCE}/Tools.Use", f"{RESOURCE}/Forecast.Read"]
    assert settings.validate_token_resource is True
    assert _warnings(caplog) == []


def test_settings_follow_the_configured_instance(env: McpEnv) -> None:
    auth = env.engine(instance="https://login.microsoftonline.us/")
    try:
        settings = auth_settings(auth, resource_server_url=RESOURCE)
    finally:
        auth.close()
    assert str(settings.issuer_url) == f"https://login.microsoftonline.us/{env.scn.tenant.tenant_id}/v2.0"
    assert settings.required_scopes is None


def test_settings_build_a_server_without_sdk_warnings(env: McpEnv) -> None:
    """filterwarnings=error: the SDK's validate_token_resource deprecation warning would fail this test."""
    settings = auth_settings(env.auth, resource_server_url=RESOURCE, scopes=["Tools.Use"])
    server = MCPServer("t", token_verifier=EntraTokenVerifier(env.auth, resource=RESOURCE), auth=settings)
    assert server.settings.auth is settings


def test_resource_that_is_not_an_app_id_uri_warns_with_the_fix(env: McpEnv, caplog: pytest.LogCaptureFixture) -> None:
    auth = env.engine(audiences=())
    try:
        auth_settings(auth, resource_server_url=RESOURCE, scopes=["Tools.Use"])
    finally:
        auth.close()
    (message,) = _warnings(caplog)
    assert RESOURCE in message and "not one of the app's App ID URIs" in message
    assert "identifierUris" in message and "audiences" in message


def test_app_id_uri_comparison_ignores_case_and_trailing_slash(env: McpEnv, caplog: pytest.LogCaptureFixture) -> None:
    auth_settings(env.auth, resource_server_url="HTTPS://MCP.contoso.com/mcp/", scopes=["Tools.Use"])
    assert _warnings(caplog) == []


def test_api_uri_resource_is_not_an_http_url(env: McpEnv) -> None:
    with pytest.raises(ConfigurationError, match="https://"):
        auth_settings(env.auth, resource_server_url=f"api://{env.server.app_id}")


def test_scope_under_another_resource_warns(env: McpEnv, caplog: pytest.LogCaptureFixture) -> None:
    auth_settings(env.auth, resource_server_url=RESOURCE, scopes=[f"api://{env.server.app_id}/Tools.Use"])
    (message,) = _warnings(caplog)
    assert "AADSTS9010010" in message and "not named under the resource" in message


def test_hand_built_settings_with_short_scopes_warn(caplog: pytest.LogCaptureFixture) -> None:
    settings = AuthSettings(
        issuer_url="https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0",  # type: ignore[arg-type]
        resource_server_url=RESOURCE,  # type: ignore[arg-type]
        required_scopes=["Tools.Use"],
        validate_token_resource=True,
    )

    async def app(scope: object, receive: object, send: object) -> None:
        return None

    ScopeChallengeMiddleware(app, settings=settings)
    (message,) = _warnings(caplog)
    assert "full-URI form" in message and f"{RESOURCE}/Tools.Use" in message


def test_type_errors(env: McpEnv) -> None:
    with pytest.raises(TypeError):
        auth_settings(object(), resource_server_url=RESOURCE)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        auth_settings(env.auth, resource_server_url=RESOURCE, scopes=[""])
