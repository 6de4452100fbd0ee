"""setup(): the OpenAPI security scheme Swagger UI signs in with, and the engine closed after the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from entra_mw import Principal
from entra_mw.contrib.fastapi import SCHEME_NAME, PrincipalDep, require, setup

from .._support import Env


def routes(app: FastAPI) -> None:
    router = APIRouter(dependencies=[Depends(require(roles=["Weather.Read.All"]))])

    @router.get("/stations")
    def stations() -> list[str]:
        return []

    app.include_router(router)

    @app.get("/forecast")
    async def forecast(user: Annotated[Principal, Depends(require(scopes=["Weather.Read"]))]) -> str:
        return "sunny"

    @app.get("/write", dependencies=[Depends(require(scopes=["Weather.Write", "api://custom/Full.Scope"]))])
    async def write() -> str:
        return "ok"

    @app.get("/me")
    async def me(user: PrincipalDep) -> str:
        return "me"

    @app.get("/public")
    async def public() -> str:
        return "hi"


def test_openapi_has_the_tenants_authorization_code_flow(env: Env) -> None:
    app = FastAPI()
    auth = env.auth()
    setup(app, auth)
    routes(app)
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
        again = client.get("/openapi.json").json()
    assert doc == again
    api = f"api://{env.scn.api.app_id}"
    authority = f"https://login.microsoftonline.com/{env.scn.tenant.tenant_id}"
    scheme = doc["components"]["securitySchemes"][SCHEME_NAME]
    assert scheme["type"] == "oauth2"
    flow = scheme["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == f"{authority}/oauth2/v2.0/authorize"
    assert flow["tokenUrl"] == f"{authority}/oauth2/v2.0/token"
    assert set(flow["scopes"]) == {f"{api}/Weather.Read", f"{api}/Weather.Write", "api://custom/Full.Scope"}
    paths = doc["paths"]
    assert paths["/forecast"]["get"]["security"] == [{SCHEME_NAME: [f"{api}/Weather.Read"]}]
    assert paths["/write"]["get"]["security"] == [{SCHEME_NAME: [f"{api}/Weather.Write", "api://custom/Full.Scope"]}]
    # App roles are not OAuth scopes a user can consent to: the lock, no scopes.
    assert paths["/stations"]["get"]["security"] == [{SCHEME_NAME: []}]
    assert paths["/me"]["get"]["security"] == [{SCHEME_NAME: []}]
    assert "security" not in paths["/public"]["get"]
    assert app.swagger_ui_init_oauth == {"clientId": env.scn.api.app_id, "usePkceWithAuthorizationCodeGrant": True}


def test_swagger_ui_is_initialised_for_pkce(env: Env) -> None:
    app = FastAPI(swagger_ui_init_oauth={"appName": "Weather"})
    setup(app, env.auth(), scopes=["Weather.Read"], app_id_uri="api://weather/", swagger_client_id="swagger-spa-id")
    routes(app)
    assert app.swagger_ui_init_oauth == {
        "clientId": "swagger-spa-id",
        "usePkceWithAuthorizationCodeGrant": True,
        "scopes": "api://weather/Weather.Read",
        "appName": "Weather",
    }
    with TestClient(app) as client:
        html = client.get("/docs").text
        doc = client.get("/openapi.json").json()
    assert '"usePkceWithAuthorizationCodeGrant": true' in html
    assert '"clientId": "swagger-spa-id"' in html
    scopes = doc["components"]["securitySchemes"][SCHEME_NAME]["flows"]["authorizationCode"]["scopes"]
    assert "api://weather/Weather.Read" in scopes
    assert doc["paths"]["/forecast"]["get"]["security"] == [{SCHEME_NAME: ["api://weather/Weather.Read"]}]


def test_without_setup_the_scheme_is_a_plain_bearer_token(env: Env) -> None:
    app = FastAPI()
    routes(app)
    doc = app.openapi()
    assert doc["components"]["securitySchemes"][SCHEME_NAME] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A Microsoft Entra ID access token.",
    }


def test_only_roles_gives_the_default_scope(env: Env) -> None:
    app = FastAPI()
    setup(app, env.auth())

    @app.get("/stations", dependencies=[Depends(require(roles=["Weather.Read.All"]))])
    async def stations() -> str:
        return ""

    flow = app.openapi()["components"]["securitySchemes"][SCHEME_NAME]["flows"]["authorizationCode"]
    assert list(flow["scopes"]) == [f"api://{env.scn.api.app_id}/.default"]


def test_engine_closed_after_the_apps_own_lifespan(env: Env) -> None:
    events: list[str] = []
    auth = env.auth()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("app startup")
        yield {"answer": 42}
        events.append(f"app shutdown (engine closed {auth.closed} times)")

    app = FastAPI(lifespan=lifespan)
    setup(app, auth)

    @app.get("/state")
    async def state(user: PrincipalDep) -> Any:
        return {"answer": 42}

    with TestClient(app) as client:
        assert client.get("/state", headers=env.bearer(env.user_token())).json() == {"answer": 42}
        assert auth.closed == 0
    assert events == ["app startup", "app shutdown (engine closed 0 times)"]
    assert auth.closed == 1
    # A second run of the same app works: the engine's clients are rebuilt on first use.
    with TestClient(app) as client:
        assert client.get("/state", headers=env.bearer(env.user_token())).status_code == 200
    assert auth.closed == 2


def test_a_router_lifespan_included_after_setup_still_runs(env: Env) -> None:
    events: list[str] = []
    auth = env.auth()

    @contextlib.asynccontextmanager
    async def router_lifespan(app: Any) -> AsyncIterator[None]:
        events.append("router startup")
        yield
        events.append("router shutdown")

    app = FastAPI()
    setup(app, auth)
    app.include_router(APIRouter(lifespan=router_lifespan))
    with TestClient(app):
        assert events == ["router startup"]
    assert events == ["router startup", "router shutdown"]
    assert auth.closed == 1
