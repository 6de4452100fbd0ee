from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from entra_mw import AuthContext, EntraAuth, Requirement
from entra_mw.asgi import EntraMiddleware
from entra_mw.errors import ConfigurationError, InvalidToken
from entra_mw.testing import FakeEntra

from ._support import Env, Result, drive, fake_env, http_scope, recording_app, stub_auth


@pytest.fixture
def env(fake_entra: FakeEntra) -> Iterator[Env]:
    env = fake_env(fake_entra)
    yield env
    env.auth.close()


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + token.encode())]


def run(mw: Any, scope: MutableMapping[str, Any], first: MutableMapping[str, Any] | None = None) -> Result:
    return asyncio.run(drive(mw, scope, Result(), first))


def make(env: Env, **options: Any) -> tuple[EntraMiddleware, Result]:
    seen = Result()
    return EntraMiddleware(recording_app(seen), auth=env.auth, **options), seen


def forget(seen: Result) -> None:
    seen.scope = None


def error_of(result: Result) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(result.body)
    return body


# -- http -----------------------------------------------------------------------------------------------


def test_valid_token_reaches_app_with_context(env: Env) -> None:
    mw, seen = make(env)
    out = run(mw, http_scope(headers=bearer(env.token)))
    assert out.status == 200
    assert out.body == b"ok"
    assert seen.scope is not None
    ctx = seen.scope["entra_mw"]
    assert isinstance(ctx, AuthContext)
    assert ctx.principal is not None
    assert env.scope in ctx.principal.scopes
    assert ctx.principal.oid == env.oid
    assert ctx.token == env.token
    assert ctx.auth is env.auth
    assert env.token not in repr(ctx)


def test_scheme_is_case_insensitive(env: Env) -> None:
    mw, _ = make(env)
    for scheme in (b"bearer", b"BEARER", b"BeArEr"):
        out = run(mw, http_scope(headers=[(b"authorization", scheme + b" " + env.token.encode())]))
        assert out.status == 200


def test_no_token_is_401_with_bare_challenge(env: Env) -> None:
    mw, seen = make(env)
    out = run(mw, http_scope())
    assert out.status == 401
    assert out.header("www-authenticate") == "Bearer"
    assert out.header("content-type") == "application/json"
    assert out.header("content-length") == str(len(out.body))
    assert error_of(out)["error"] == "unauthorized"
    assert seen.scope is None


@pytest.mark.parametrize("value", [b"Basic dXNlcjpwYXNz", b"Negotiate abc", b"", b"   ", b"Bearerx abc", b"\xff\xfe"])
def test_other_schemes_are_missing_token(env: Env, value: bytes) -> None:
    mw, seen = make(env)
    out = run(mw, http_scope(headers=[(b"authorization", value)]))
    assert out.status == 401
    assert out.header("www-authenticate") == "Bearer"
    assert seen.scope is None


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer",
        b"Bearer ",
        b"Bearer a b",
        b"Bearer \xe9t\xe9",
        b"Bearer a\x00b",
        b"Bearer abc, Basic dXNlcg==",
        b"Bearer a,b",
        b"Bearer =",
        b"Bearer ====",
    ],
)
def test_malformed_bearer_is_400(env: Env, value: bytes) -> None:
    mw, seen = make(env)
    out = run(mw, http_scope(headers=[(b"authorization", value)]))
    assert out.status == 400
    challenge = out.header("www-authenticate")
    assert challenge is not None
    assert challenge.startswith('Bearer error="invalid_request"')
    assert error_of(out)["error"] == "invalid_request"
    assert seen.scope is None


def test_duplicate_authorization_headers_are_400(env: Env) -> None:
    mw, seen = make(env)
    headers = bearer(env.token) + bearer(env.token)
    out = run(mw, http_scope(headers=headers))
    assert out.status == 400
    assert seen.scope is None
    # Also when only one of them is a bearer token.
    out = run(mw, http_scope(headers=[(b"authorization", b"Basic dXNlcg=="), *bearer(env.token)]))
    assert out.status == 400


def test_folded_credentials_are_400(env: Env) -> None:
    mw, _ = make(env)
    out = run(mw, http_scope(headers=[(b"authorization", b"Basic dXNlcg==, Bearer " + env.token.encode())]))
    assert out.status == 400


def test_header_name_case_is_tolerated(env: Env) -> None:
    mw, _ = make(env)
    out = run(mw, http_scope(headers=[(b"Authorization", b"Bearer " + env.token.encode())]))
    assert out.status == 200


@pytest.mark.parametrize(
    "query", [b"access_token=abc", b"a=1&access_token=abc", b"access%5Ftoken=abc", b"access_token", b"%61ccess_token=x"]
)
def test_token_in_query_is_400(env: Env, query: bytes) -> None:
    mw, seen = make(env)
    # With a header: two methods at once (RFC 6750 §3.1); without: the URI method is not supported.
    for headers in (bearer(env.token), []):
        out = run(mw, http_scope(headers=headers, query=query))
        assert out.status == 400
        assert error_of(out)["error"] == "invalid_request"
    assert seen.scope is None


@pytest.mark.parametrize("query", [b"", b"x=1", b"q=access&y=%20", b"my_access_token=1", b"%zz=1"])
def test_other_queries_pass(env: Env, query: bytes) -> None:
    mw, _ = make(env)
    assert run(mw, http_scope(headers=bearer(env.token), query=query)).status == 200


def test_invalid_token_is_401_invalid_token(env: Env) -> None:
    mw, seen = make(env)
    out = run(mw, http_scope(headers=bearer(env.bad)))
    assert out.status == 401
    challenge = out.header("www-authenticate")
    assert challenge is not None
    assert challenge.startswith('Bearer error="invalid_token"')
    assert env.bad not in out.body.decode()
    assert seen.scope is None


def test_provider_unavailable_is_503() -> None:
    auth = stub_auth()
    mw = EntraMiddleware(recording_app(Result()), auth=auth)
    out = run(mw, http_scope(headers=bearer("down")))
    assert out.status == 503
    assert out.header("retry-after") == "5"
    assert out.header("www-authenticate") is None


def test_requirement_met_and_unmet(env: Env) -> None:
    mw, seen = make(env, requirement=Requirement(scopes=(env.scope,)))
    assert run(mw, http_scope(headers=bearer(env.token))).status == 200
    mw, seen = make(env, requirement=Requirement(scopes=("Files.Write",), roles=("Files.Write.All",)))
    out = run(mw, http_scope(headers=bearer(env.token)))
    assert out.status == 403
    challenge = out.header("www-authenticate")
    assert challenge is not None
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="Files.Write"' in challenge
    assert seen.scope is None


# -- optional mode ---------------------------------------------------------------------------------------


def test_optional_mode_without_token_is_anonymous(env: Env) -> None:
    mw, seen = make(env, required=False, requirement=Requirement(scopes=("Files.Write",)))
    for headers in ([], [(b"authorization", b"Basic dXNlcg==")]):
        out = run(mw, http_scope(headers=headers))
        assert out.status == 200
        assert seen.scope is not None
        ctx = seen.scope["entra_mw"]
        assert ctx.principal is None
        assert ctx.token is None
        assert not ctx.is_authenticated


def test_optional_mode_refuses_a_present_bad_token(env: Env) -> None:
    mw, seen = make(env, required=False)
    assert run(mw, http_scope(headers=bearer(env.bad))).status == 401
    assert run(mw, http_scope(headers=[(b"authorization", b"Bearer a b")])).status == 400
    assert run(mw, http_scope(query=b"access_token=x")).status == 400
    assert seen.scope is None
    ok, seen = make(env, required=False)
    assert run(ok, http_scope(headers=bearer(env.token))).status == 200
    assert seen.scope is not None
    assert seen.scope["entra_mw"].principal is not None


# -- exclude_paths ---------------------------------------------------------------------------------------


def test_exclude_paths(env: Env) -> None:
    mw, seen = make(env, exclude_paths=["/healthz", "/public/*"])
    for path in ("/healthz", "/public", "/public/", "/public/a/b.css"):
        forget(seen)
        out = run(mw, http_scope(path=path, headers=bearer(env.bad)))
        assert out.status == 200, path
        assert seen.scope is not None
        assert seen.scope["entra_mw"].principal is None
    for path in ("/healthz/", "/healthz/x", "/publicity", "/public/../admin", "/public/./x", "/public/..", "/"):
        assert run(mw, http_scope(path=path)).status == 401, path


@pytest.mark.parametrize("bad", ["healthz", "/a/*/b", "/a*", "*"])
def test_exclude_paths_are_checked(env: Env, bad: str) -> None:
    with pytest.raises(ConfigurationError):
        EntraMiddleware(recording_app(Result()), auth=env.auth, exclude_paths=[bad])


def test_constructor_checks_types(env: Env) -> None:
    with pytest.raises(TypeError):
        EntraMiddleware(recording_app(Result()), auth=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        EntraMiddleware(recording_app(Result()), auth=env.auth, requirement="x")  # type: ignore[arg-type]


# -- other scope types and app errors --------------------------------------------------------------------


def test_lifespan_passes_through(env: Env) -> None:
    mw, seen = make(env)
    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}}
    run(mw, scope, first={"type": "lifespan.startup"})
    assert seen.scope is scope
    assert "entra_mw" not in scope


def test_errors_raised_by_the_app_are_not_rendered(env: Env) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise InvalidToken("raised by the app")

    mw = EntraMiddleware(app, auth=env.auth)
    with pytest.raises(InvalidToken, match="raised by the app"):
        run(mw, http_scope(headers=bearer(env.token)))


# -- websocket -------------------------------------------------------------------------------------------


def test_websocket_denial_response_when_supported(env: Env) -> None:
    mw, seen = make(env)
    scope = http_scope(type_="websocket")
    scope["extensions"] = {"websocket.http.response": {}}
    out = run(mw, scope)
    assert [m["type"] for m in out.messages] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert out.status == 401
    assert out.header("www-authenticate") == "Bearer"
    assert seen.scope is None


def test_websocket_close_1008_otherwise(env: Env) -> None:
    mw, seen = make(env)
    out = run(mw, http_scope(type_="websocket", headers=bearer(env.bad)))
    assert len(out.messages) == 1
    assert out.messages[0]["type"] == "websocket.close"
    assert out.messages[0]["code"] == 1008
    assert len(out.messages[0]["reason"].encode()) <= 123
    assert seen.scope is None


def test_websocket_client_gone_before_denial(env: Env) -> None:
    mw, _ = make(env)
    out = run(mw, http_scope(type_="websocket"), first={"type": "websocket.disconnect", "code": 1001})
    assert out.messages == []


def test_websocket_accepted_with_token(env: Env) -> None:
    mw, seen = make(env)
    out = run(mw, http_scope(type_="websocket", headers=bearer(env.token)))
    assert [m["type"] for m in out.messages] == ["websocket.accept", "websocket.close"]
    assert seen.scope is not None
    assert seen.scope["entra_mw"].principal is not None


# -- a real Starlette app through its TestClient ----------------------------------------------------------


def starlette_app(auth: EntraAuth, **options: Any) -> Starlette:
    async def me(request: Request) -> JSONResponse:
        ctx: AuthContext = request.scope["entra_mw"]
        principal = ctx.principal
        return JSONResponse({"oid": principal.oid if principal else None})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        ctx: AuthContext = websocket.scope["entra_mw"]
        await websocket.send_json({"oid": ctx.principal.oid if ctx.principal else None})
        await websocket.close()

    app = Starlette(routes=[Route("/me", me), Route("/healthz", health), WebSocketRoute("/ws", ws)])
    app.add_middleware(EntraMiddleware, auth=auth, exclude_paths=["/healthz"], **options)
    return app


def test_starlette_testclient(env: Env) -> None:
    with TestClient(starlette_app(env.auth)) as client:
        ok = client.get("/me", headers={"Authorization": f"Bearer {env.token}"})
        assert ok.status_code == 200
        assert ok.json()["oid"] == env.oid
        denied = client.get("/me")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == "Bearer"
        bad = client.get("/me", headers={"Authorization": f"Bearer {env.bad}"})
        assert bad.status_code == 401
        assert bad.json()["error"] == "invalid_token"
        assert client.get("/healthz").status_code == 200


def test_starlette_testclient_websocket(env: Env) -> None:
    from starlette.testclient import WebSocketDenialResponse

    with TestClient(starlette_app(env.auth)) as client:
        with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {env.token}"}) as ws:
            assert ws.receive_json()["oid"] == env.oid
        with pytest.raises((WebSocketDenialResponse, WebSocketDisconnect)) as info:
            with client.websocket_connect("/ws"):
                pass
        if isinstance(info.value, WebSocketDenialResponse):
            assert info.value.status_code == 401
            assert info.value.headers["www-authenticate"] == "Bearer"
        else:
            assert info.value.code == 1008
