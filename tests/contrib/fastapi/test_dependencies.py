"""PrincipalDep, DownstreamDep and require() with and without EntraMiddleware: statuses, challenges, and one
validation per request however many dependencies ask."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from entra_mw import Downstream, EntraAuth, InsufficientScope, Principal
from entra_mw.asgi import EntraMiddleware, get_context
from entra_mw.contrib.fastapi import DownstreamDep, PrincipalDep, require, setup

from .._support import Env


def build(auth: EntraAuth, *, with_setup: bool = True) -> FastAPI:
    app = FastAPI()
    if with_setup:
        setup(app, auth)
    stations = APIRouter(prefix="/stations", dependencies=[Depends(require(roles=["Weather.Read.All"]))])

    @stations.get("")
    def list_stations() -> list[str]:
        return ["Seattle"]

    app.include_router(stations)

    @app.get("/me")
    async def me(user: PrincipalDep) -> dict[str, Any]:
        return {"oid": user.oid, "app": user.is_app}

    @app.get("/forecast")
    def forecast(user: Annotated[Principal, Depends(require(scopes=["Weather.Read"]))]) -> dict[str, Any]:
        return {"oid": user.oid}

    @app.get("/either", dependencies=[Depends(require(scopes="Weather.Read", roles=("Weather.Read.All",)))])
    async def either() -> str:
        return "ok"

    @app.get("/many")
    async def many(
        a: PrincipalDep,
        b: Annotated[Principal, Depends(require(scopes=["Weather.Read"]))],
        c: Annotated[Principal, Depends(require(scopes=["Weather.Read"], roles=["Weather.Read.All"]))],
        downstream: DownstreamDep,
    ) -> dict[str, Any]:
        assert a is b is c is downstream.principal
        return {"same": True}

    @app.get("/raise")
    async def raise_(user: PrincipalDep) -> str:
        raise InsufficientScope(["Files.Write"])

    @app.get("/public")
    async def public() -> str:
        return "hello"

    return app


def test_statuses_and_challenges(env: Env) -> None:
    with TestClient(build(env.auth())) as client:
        missing = client.get("/me")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]
        user = client.get("/me", headers=env.bearer(env.user_token()))
        assert user.status_code == 200
        assert user.json() == {"oid": env.scn.user.object_id, "app": False}
        assert client.get("/forecast", headers=env.bearer(env.user_token())).status_code == 200
        denied = client.get("/forecast", headers=env.bearer(env.app_token()))
        assert denied.status_code == 403
        assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
        assert 'scope="Weather.Read"' in denied.headers["www-authenticate"]
        assert denied.json()["scope"] == "Weather.Read"
        bad = client.get("/me", headers=env.bearer(env.user_token()[:-6] + "AAAAAA"))
        assert bad.status_code == 401
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]
        wrong_audience = env.fake.user_token(env.scn.user, client=env.scn.client, resource=env.provider_app)
        assert client.get("/me", headers=env.bearer(wrong_audience)).status_code == 401
        query = client.get("/me?access_token=abc", headers=env.bearer(env.user_token()))
        assert query.status_code == 400
        assert client.get("/public").text == '"hello"'


def test_router_and_route_dependencies(env: Env) -> None:
    with TestClient(build(env.auth())) as client:
        assert client.get("/stations", headers=env.bearer(env.app_token())).json() == ["Seattle"]
        assert client.get("/stations", headers=env.bearer(env.user_token())).status_code == 403
        assert client.get("/stations").status_code == 401
        assert client.get("/either", headers=env.bearer(env.app_token())).status_code == 200
        assert client.get("/either", headers=env.bearer(env.user_token())).status_code == 200
        no_rights = env.app_token(roles=["Other.Role"])
        assert client.get("/either", headers=env.bearer(no_rights)).status_code == 403


def test_one_validation_per_request_without_middleware(env: Env) -> None:
    auth = env.auth()
    with TestClient(build(auth)) as client:
        response = client.get("/many", headers=env.bearer(env.user_token()))
        assert response.status_code == 200, response.text
        assert auth.validations == 1
        client.get("/stations", headers=env.bearer(env.app_token()))
        assert auth.validations == 2


def test_an_error_the_app_raises_renders_itself(env: Env) -> None:
    with TestClient(build(env.auth())) as client:
        response = client.get("/raise", headers=env.bearer(env.user_token()))
    assert response.status_code == 403
    assert 'scope="Files.Write"' in response.headers["www-authenticate"]
    assert response.headers["cache-control"] == "no-store"


def test_with_middleware_nothing_is_validated_twice(env: Env) -> None:
    auth = env.auth()
    app = build(auth)
    app.add_middleware(EntraMiddleware, auth=auth)
    with TestClient(app) as client:
        assert client.get("/many", headers=env.bearer(env.user_token())).status_code == 200
        assert auth.validations == 1
        # The middleware answers by itself before any dependency runs.
        assert client.get("/me").status_code == 401
        assert auth.validations == 1
        assert client.get("/public").status_code == 401


def test_with_optional_middleware_and_excluded_paths(env: Env) -> None:
    auth = env.auth()
    app = build(auth)
    app.add_middleware(EntraMiddleware, auth=auth, required=False, exclude_paths=["/stations"])
    with TestClient(app) as client:
        assert client.get("/public").status_code == 200
        anonymous = client.get("/me")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert client.get("/me", headers=env.bearer(env.user_token())).status_code == 200
        assert auth.validations == 1
        # The middleware skipped /stations entirely; the route's dependency authenticates it, once.
        assert client.get("/stations", headers=env.bearer(env.app_token())).status_code == 200
        assert auth.validations == 2
        assert client.get("/stations").status_code == 401


def test_middleware_without_setup_still_answers_with_the_challenge(env: Env) -> None:
    auth = env.auth()
    app = build(auth, with_setup=False)
    app.add_middleware(EntraMiddleware, auth=auth, required=False)
    with TestClient(app) as client:
        denied = client.get("/forecast", headers=env.bearer(env.app_token()))
        assert denied.status_code == 403
        assert 'scope="Weather.Read"' in denied.headers["www-authenticate"]
        missing = client.get("/me")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
    auth.close()


def test_no_setup_and_no_middleware_is_a_clear_error(env: Env) -> None:
    app = build(env.auth(), with_setup=False)
    with TestClient(app, raise_server_exceptions=True) as client:
        with pytest.raises(RuntimeError, match="setup"):
            client.get("/me", headers=env.bearer(env.user_token()))


def test_context_is_the_middlewares_slot(env: Env) -> None:
    app = FastAPI()
    setup(app, env.auth())

    @app.get("/ctx")
    async def ctx(user: PrincipalDep, downstream: DownstreamDep) -> dict[str, Any]:
        raise HTTPException(418, detail={"oid": user.oid, "downstream": isinstance(downstream, Downstream)})

    @app.get("/slot")
    async def slot(request: Request, user: PrincipalDep) -> dict[str, Any]:
        return {"same": get_context(request).principal is user}

    with TestClient(app) as client:
        assert client.get("/ctx", headers=env.bearer(env.user_token())).json()["detail"]["downstream"] is True
        assert client.get("/slot", headers=env.bearer(env.user_token())).json() == {"same": True}


def test_setup_twice(env: Env) -> None:
    from entra_mw import ConfigurationError

    app = FastAPI()
    auth = env.auth()
    setup(app, auth)
    setup(app, auth)  # the same engine: nothing changes
    with pytest.raises(ConfigurationError):
        setup(app, env.auth())
    with pytest.raises(TypeError):
        setup(FastAPI(), object())  # type: ignore[arg-type]


def test_websocket_routes(env: Env) -> None:
    app = FastAPI()
    setup(app, env.auth())

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, user: Annotated[Principal, Depends(require(scopes=["Weather.Read"]))]) -> None:
        await websocket.accept()
        await websocket.send_text(user.oid or "")
        await websocket.close()

    with TestClient(app) as client:
        with client.websocket_connect("/ws", headers=env.bearer(env.user_token())) as socket:
            assert socket.receive_text() == env.scn.user.object_id
        with pytest.raises(WebSocketDenialResponse) as missing:
            with client.websocket_connect("/ws"):
                pass
        assert missing.value.status_code == 401
        assert missing.value.headers["www-authenticate"] == "Bearer"
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect("/ws", headers=env.bearer(env.app_token())):
                pass
        assert denied.value.status_code == 403
