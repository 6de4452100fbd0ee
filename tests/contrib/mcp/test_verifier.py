"""EntraTokenVerifier: the SDK's TokenVerifier on the engine, with Entra's audiences mapped to the resource."""

from __future__ import annotations

import logging

import pytest
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from pydantic import AnyHttpUrl
from starlette.requests import HTTPConnection

from entra_mw import ConfigurationError, EntraAuth
from entra_mw.contrib.mcp import EntraAccessToken, EntraTokenVerifier
from entra_mw.testing import FakeEntra

from .conftest import RESOURCE, McpEnv

pytestmark = pytest.mark.anyio


async def test_v2_token_with_guid_audience_maps_to_the_resource(env: McpEnv) -> None:
    token = env.user_token("Tools.Use")
    assert env.fake.decode(token)["aud"] == env.server.app_id  # Entra's v2 shape: the client id, not the URL
    verifier = EntraTokenVerifier(env.auth, resource=RESOURCE)
    at = await verifier.verify_token(token)
    assert isinstance(at, EntraAccessToken)
    assert at.resource == RESOURCE
    assert at.client_id == env.scn.client.app_id
    assert at.scopes == ["Tools.Use", f"{RESOURCE}/Tools.Use"]
    claims = env.fake.decode(token)
    assert at.expires_at == claims["exp"]
    assert at.subject == claims["sub"]
    assert at.claims is not None and at.claims["iss"] == claims["iss"] and at.claims["oid"] == env.scn.user.object_id
    assert at.token == token
    assert at.context.principal is not None and at.context.principal.oid == env.scn.user.object_id
    assert token not in repr(at.context)


async def test_v1_token_for_the_app_id_uri_maps_to_the_resource(env: McpEnv) -> None:
    token = env.fake.user_token(env.scn.user, client=env.scn.client, resource=env.server, version=1)
    assert env.fake.decode(token)["aud"] == RESOURCE
    at = await EntraTokenVerifier(env.auth, resource=RESOURCE).verify_token(token)
    assert at is not None and at.resource == RESOURCE


async def test_app_token_scopes_are_its_roles(env: McpEnv) -> None:
    token = env.fake.app_token(env.scn.client, resource=env.server)
    at = await EntraTokenVerifier(env.auth, resource=RESOURCE).verify_token(token)
    assert at is not None
    assert at.scopes == ["Tools.All"]
    assert at.client_id == env.scn.client.app_id


async def test_sdk_resource_check_passes_for_the_mapped_token(env: McpEnv) -> None:
    """The SDK's own backend, with validate_token_resource on, accepts the GUID-audience token."""
    backend = BearerAuthBackend(
        EntraTokenVerifier(env.auth, resource=RESOURCE), resource_server_url=AnyHttpUrl(RESOURCE)
    )
    token = env.user_token("Tools.Use")
    conn = HTTPConnection({"type": "http", "headers": [(b"authorization", f"Bearer {token}".encode())]})
    result = await backend.authenticate(conn)
    assert result is not None
    credentials, user = result
    assert f"{RESOURCE}/Tools.Use" in credentials.scopes
    assert user.display_name == env.scn.client.app_id


def _refused(caplog: pytest.LogCaptureFixture, token: str) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.name == "entra_mw.mcp"]
    assert all(token not in m for m in messages)
    assert all(token not in r.getMessage() for r in caplog.records)
    return messages


@pytest.mark.parametrize("case", ["other_audience", "expired", "other_tenant", "garbage", "forged"])
async def test_refused_tokens_answer_none_and_log_why(env: McpEnv, caplog: pytest.LogCaptureFixture, case: str) -> None:
    fake = env.fake
    if case == "other_audience":
        token = fake.user_token(env.scn.user, client=env.scn.client, resource=env.scn.api)
    elif case == "expired":
        token = env.user_token("Tools.Use", lifetime=60)
        fake.clock.advance(3600)  # type: ignore[attr-defined]
    elif case == "other_tenant":
        other = fake.add_tenant(domain="fabrikam.onmicrosoft.com")
        token = fake.issue_token(tenant=other, resource=env.server, client=env.scn.client, user=env.scn.user)
    elif case == "garbage":
        token = "not-a-jwt"
    else:
        claims = fake.decode(env.user_token("Tools.Use"))
        token = fake.mint_raw({"alg": "HS256", "kid": fake.current_kid}, claims, alg="HS256")
    verifier = EntraTokenVerifier(env.auth, resource=RESOURCE)
    with caplog.at_level(logging.INFO, logger="entra_mw"):
        assert await verifier.verify_token(token) is None
    messages = _refused(caplog, token)
    assert any(m.startswith("mcp token refused reason=") for m in messages), messages


async def test_key_outage_is_logged_as_a_warning(env: McpEnv, caplog: pytest.LogCaptureFixture) -> None:
    env.fake.faults.outage("*")
    token = env.user_token("Tools.Use")
    with caplog.at_level(logging.INFO, logger="entra_mw"):
        assert await EntraTokenVerifier(env.auth, resource=RESOURCE).verify_token(token) is None
    warnings = [r for r in caplog.records if r.name == "entra_mw.mcp" and r.levelno == logging.WARNING]
    assert warnings and "signing keys unavailable" in warnings[0].getMessage()
    _refused(caplog, token)


def test_bad_resource_and_engine_are_refused(env: McpEnv) -> None:
    for bad in ("", "mcp.contoso.com", "ftp://mcp.contoso.com", "http://mcp.contoso.com/mcp", f"{RESOURCE}#x"):
        with pytest.raises(ConfigurationError):
            EntraTokenVerifier(env.auth, resource=bad)
    with pytest.raises(TypeError):
        EntraTokenVerifier(object(), resource=RESOURCE)  # type: ignore[arg-type]
    assert "mcp.contoso.com" in repr(EntraTokenVerifier(env.auth, resource=RESOURCE))


async def test_another_apps_engine_refuses_this_apps_token(env: McpEnv, fake_entra: FakeEntra) -> None:
    """The mapping is only as wide as the engine's accepted audiences: another app's engine refuses."""
    other: EntraAuth = env.engine(client_id=env.scn.api.app_id, audiences=())
    try:
        assert await EntraTokenVerifier(other, resource=RESOURCE).verify_token(env.user_token("Tools.Use")) is None
    finally:
        other.close()
