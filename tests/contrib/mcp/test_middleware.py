"""ScopeChallengeMiddleware: scope="…" on the SDK's challenges, and HTTP 403 for a tool the caller may not use."""

from __future__ import annotations

import json

import pytest
from mcp.server.auth.settings import AuthSettings

from entra_mw.contrib.mcp import EntraTokenVerifier, ScopeChallengeMiddleware, auth_settings, require

from ._asgi import Inner, Scope, drive, http_scope
from .conftest import RESOURCE, McpEnv

pytestmark = pytest.mark.anyio

METADATA = "https://mcp.contoso.com/.well-known/oauth-protected-resource/mcp"
SDK_401 = f'Bearer error="invalid_token", error_description="Authentication required", resource_metadata="{METADATA}"'


@pytest.fixture
def settings(env: McpEnv) -> AuthSettings:
    return auth_settings(env.auth, resource_server_url=RESOURCE, scopes=["Tools.Use"])


@require(scopes=["Forecast.Read"])
async def forecast(city: str) -> str:
    return city


@require(roles=["Tools.All"], name="admin-report")
def admin_report() -> str:
    return "report"


def _call(name: str, **extra: object) -> bytes:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}
    message.update(extra)
    return json.dumps(message).encode()


def _bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]


@pytest.mark.parametrize("status", [401, 403])
async def test_scope_added_to_sdk_challenges(settings: AuthSettings, status: int) -> None:
    inner = Inner(status=status, headers=[(b"www-authenticate", SDK_401.encode()), (b"content-type", b"x")])
    # A token was sent (the SDK judged it): its own challenge is kept, with the scope added.
    result = await drive(ScopeChallengeMiddleware(inner, settings=settings), http_scope(headers=_bearer("a.b.c")))
    challenge = result.header("WWW-Authenticate")
    assert challenge == SDK_401 + f', scope="{RESOURCE}/Tools.Use"'
    assert f'resource_metadata="{METADATA}"' in challenge
    assert result.header("content-type") == "x" and result.body == b"inner"


async def test_bare_challenge_gets_scope(settings: AuthSettings) -> None:
    inner = Inner(status=401, headers=[(b"WWW-Authenticate", b"Bearer")])
    result = await drive(ScopeChallengeMiddleware(inner, settings=settings), http_scope(headers=_bearer("a.b.c")))
    assert result.header("www-authenticate") == f'Bearer scope="{RESOURCE}/Tools.Use"'


async def test_no_token_gets_a_bare_challenge_with_metadata_and_scope(settings: AuthSettings) -> None:
    # RFC 6750 §3.1: a request with no credentials gets no error code; MCP clients need resource_metadata and scope.
    inner = Inner(status=401, headers=[(b"www-authenticate", SDK_401.encode())])
    result = await drive(ScopeChallengeMiddleware(inner, settings=settings), http_scope())
    assert result.status == 401
    assert result.header("www-authenticate") == (
        f'Bearer scope="{RESOURCE}/Tools.Use", resource_metadata="{METADATA}"'
    )
    assert json.loads(result.body)["error"] == "unauthorized"


@pytest.mark.parametrize(
    "value",
    [
        b'Bearer scope="x", error="insufficient_scope"',
        b'Bearer error="insufficient_scope", scope="x"',
        b"Basic realm=x",
    ],
)
async def test_challenges_that_name_a_scope_or_another_scheme_are_kept(settings: AuthSettings, value: bytes) -> None:
    inner = Inner(status=403, headers=[(b"www-authenticate", value)])
    result = await drive(ScopeChallengeMiddleware(inner, settings=settings), http_scope())
    assert result.header("www-authenticate") == value.decode()


async def test_other_statuses_and_scopes_pass_untouched(settings: AuthSettings) -> None:
    inner = Inner(status=200, headers=[(b"www-authenticate", b"Bearer")])
    result = await drive(ScopeChallengeMiddleware(inner, settings=settings), http_scope())
    assert result.header("www-authenticate") == "Bearer"
    seen: list[Scope] = []

    async def lifespan(scope: Scope, receive: object, send: object) -> None:
        seen.append(scope)

    await ScopeChallengeMiddleware(lifespan, settings=settings)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == [{"type": "lifespan"}]


async def test_no_required_scopes_adds_nothing(env: McpEnv) -> None:
    settings = auth_settings(env.auth, resource_server_url=RESOURCE)
    inner = Inner(status=401, headers=[(b"www-authenticate", SDK_401.encode())])
    result = await drive(ScopeChallengeMiddleware(inner, settings=settings), http_scope(headers=_bearer("a.b.c")))
    assert result.header("www-authenticate") == SDK_401


# -- per-tool requirements ---------------------------------------------------------------------------------


def _guarded(env: McpEnv, settings: AuthSettings, inner: Inner) -> ScopeChallengeMiddleware:
    verifier = EntraTokenVerifier(env.auth, resource=RESOURCE)
    return ScopeChallengeMiddleware(inner, settings=settings, verifier=verifier, tools=[forecast, admin_report])


async def test_tool_without_its_scope_is_a_403_naming_the_scope(env: McpEnv, settings: AuthSettings) -> None:
    inner = Inner()
    token = env.user_token("Tools.Use")
    result = await drive(_guarded(env, settings, inner), http_scope(headers=_bearer(token)), [_call("forecast")])
    assert result.status == 403
    assert inner.calls == 0
    challenge = result.header("www-authenticate")
    assert challenge is not None and challenge.startswith('Bearer error="insufficient_scope"')
    # The step-up scope: the server-wide scope and the tool's, in full form.
    wanted = f"{RESOURCE}/Tools.Use {RESOURCE}/Forecast.Read"
    assert f'scope="{wanted}"' in challenge
    assert f'resource_metadata="{METADATA}"' in challenge
    body = json.loads(result.body)
    assert body["error"] == "insufficient_scope" and body["scope"] == wanted
    assert token not in result.body.decode() and token not in challenge


async def test_app_role_tool_names_the_role(env: McpEnv, settings: AuthSettings) -> None:
    token = env.user_token("Tools.Use")
    result = await drive(_guarded(env, settings, Inner()), http_scope(headers=_bearer(token)), [_call("admin-report")])
    assert result.status == 403
    assert 'scope="Tools.All"' in (result.header("www-authenticate") or "")
    app_token = env.fake.app_token(env.scn.client, resource=env.server)
    inner = Inner()
    result = await drive(
        _guarded(env, settings, inner), http_scope(headers=_bearer(app_token)), [_call("admin-report")]
    )
    assert result.status == 200 and inner.calls == 1


async def test_tool_with_its_scope_reaches_the_sdk_with_the_same_body(env: McpEnv, settings: AuthSettings) -> None:
    inner = Inner()
    token = env.user_token("Tools.Use", "Forecast.Read")
    body = _call("forecast")
    chunks = [body[:10], body[10:25], body[25:]]
    result = await drive(_guarded(env, settings, inner), http_scope(headers=_bearer(token)), chunks)
    assert result.status == 200 and inner.body == body


@pytest.mark.parametrize(
    "body",
    [
        _call("other-tool"),
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode(),
        b"{not json",
        b"[]",
        json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"}]).encode(),
    ],
)
async def test_other_requests_pass_through(env: McpEnv, settings: AuthSettings, body: bytes) -> None:
    inner = Inner()
    token = env.user_token("Tools.Use")
    result = await drive(_guarded(env, settings, inner), http_scope(headers=_bearer(token)), [body])
    assert result.status == 200 and inner.body == body


async def test_batch_with_a_guarded_call_is_refused(env: McpEnv, settings: AuthSettings) -> None:
    batch = b"[" + _call("other") + b"," + _call("forecast") + b"]"
    token = env.user_token("Tools.Use")
    result = await drive(_guarded(env, settings, Inner()), http_scope(headers=_bearer(token)), [batch])
    assert result.status == 403


@pytest.mark.parametrize("token", [None, "garbage"])
async def test_no_or_bad_token_is_left_to_the_sdk(env: McpEnv, settings: AuthSettings, token: str | None) -> None:
    inner = Inner(status=401, headers=[(b"www-authenticate", SDK_401.encode())])
    headers = _bearer(token) if token else []
    result = await drive(_guarded(env, settings, inner), http_scope(headers=headers), [_call("forecast")])
    assert result.status == 401 and inner.calls == 1
    assert f'scope="{RESOURCE}/Tools.Use"' in (result.header("www-authenticate") or "")


async def test_large_bodies_and_gets_are_not_read(env: McpEnv, settings: AuthSettings) -> None:
    inner = Inner()
    big = [b" " * (1 << 19)] * 3 + [_call("forecast")]
    token = env.user_token("Tools.Use")
    result = await drive(_guarded(env, settings, inner), http_scope(headers=_bearer(token)), big)
    assert result.status == 200 and inner.body == b"".join(big)
    inner = Inner()
    result = await drive(_guarded(env, settings, inner), http_scope("GET", headers=_bearer(token)), [_call("forecast")])
    assert result.status == 200


def test_tools_need_the_decorator_and_a_verifier(env: McpEnv, settings: AuthSettings) -> None:
    def plain() -> None:
        return None

    with pytest.raises(TypeError, match="not decorated"):
        ScopeChallengeMiddleware(
            Inner(), settings=settings, verifier=EntraTokenVerifier(env.auth, resource=RESOURCE), tools=[plain]
        )
    with pytest.raises(TypeError, match="verifier"):
        ScopeChallengeMiddleware(Inner(), settings=settings, tools=[forecast])
    with pytest.raises(TypeError, match="AuthSettings"):
        ScopeChallengeMiddleware(Inner(), settings=object())  # type: ignore[arg-type]
