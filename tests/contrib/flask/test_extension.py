"""EntraMW: the factory pattern, configuration, default protection and its options, @require, the current_*
proxies, JSON refusals, several apps with their own tenants, and the engine's lifetime."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from entra_mw import ConfigurationError, EntraAuth, EntraConfig, InsufficientScope
from entra_mw.contrib.flask import EntraMW, current_downstream, current_principal, get_context, require
from entra_mw.wsgi import EntraWSGIMiddleware

from .._support import CountingAuth, Env

Views = Callable[[Flask], None]


def views(app: Flask) -> None:
    @app.get("/me")
    def me() -> dict[str, Any]:
        return {"oid": current_principal.oid}

    @app.get("/who")
    def who() -> dict[str, Any]:
        principal = get_context().principal
        return {"oid": principal.oid if principal else None}

    @app.get("/forecast")
    @require(scopes=["Weather.Read"])
    def forecast() -> dict[str, Any]:
        return {"oid": current_principal.oid}

    @app.get("/stations")
    @require(roles="Weather.Read.All")
    def stations() -> list[str]:
        return ["Seattle"]

    @app.get("/async")
    @require(scopes=["Weather.Read"])
    async def async_view() -> dict[str, Any]:
        return {"oid": current_principal.oid}

    @app.get("/provider")
    @require()
    def provider() -> Any:
        first = current_downstream.call("provider", "forecast").json()
        second = current_downstream.call("provider", "forecast").json()
        return [first, second]

    @app.get("/raise")
    def raise_() -> str:
        raise InsufficientScope(["Files.Write"])

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"


class Built:
    """Engines the factory built, so tests can look at them."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.engines: list[CountingAuth] = []

    def __call__(self, config: EntraConfig) -> EntraAuth:
        auth = self.env.auth(config)
        self.engines.append(auth)
        return auth


def make_app(env: Env, built: Built | None = None, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config["ENTRA_MW"] = env.settings
    app.config["ENTRA_MW_AUTH_FACTORY"] = built or Built(env)
    app.config.update(config)
    EntraMW(app)
    views(app)
    return app


def test_protects_every_route_by_default(env: Env) -> None:
    client = make_app(env).test_client()
    missing = client.get("/healthz")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json is not None and missing.json["error"]
    assert client.get("/no-such-route").status_code == 401
    assert client.get("/me", headers=env.bearer(env.user_token())).json == {"oid": env.scn.user.object_id}
    bad = client.get("/me", headers=env.bearer(env.user_token()[:-6] + "AAAAAA"))
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    assert bad.headers["Content-Type"] == "application/json"


def test_require_scopes_and_roles(env: Env) -> None:
    client = make_app(env).test_client()
    user, app_only = env.bearer(env.user_token()), env.bearer(env.app_token())
    assert client.get("/forecast", headers=user).status_code == 200
    denied = client.get("/forecast", headers=app_only)
    assert denied.status_code == 403
    assert 'scope="Weather.Read"' in denied.headers["WWW-Authenticate"]
    assert denied.json is not None and denied.json["scope"] == "Weather.Read"
    assert client.get("/stations", headers=app_only).json == ["Seattle"]
    assert client.get("/stations", headers=user).status_code == 403
    assert client.get("/async", headers=user).json == {"oid": env.scn.user.object_id}
    raised = client.get("/raise", headers=user)
    assert raised.status_code == 403
    assert 'scope="Files.Write"' in raised.headers["WWW-Authenticate"]


def test_optional_mode_and_excluded_paths(env: Env) -> None:
    app = make_app(env, ENTRA_MW_REQUIRED=False, ENTRA_MW_EXCLUDE_PATHS=["/healthz", "/stations"])
    client = app.test_client()
    assert client.get("/who").json == {"oid": None}
    assert client.get("/who", headers=env.bearer(env.user_token())).json == {"oid": env.scn.user.object_id}
    # A token that is sent must be valid, even where none is needed.
    assert client.get("/who", headers=env.bearer("abc.def.ghi")).status_code == 401
    assert client.get("/forecast").status_code == 401
    assert client.get("/me").status_code == 401  # current_principal needs a caller
    assert client.get("/healthz").text == "ok"
    assert client.get("/healthz", headers=env.bearer("abc.def.ghi")).status_code == 401
    # An excluded path whose view is decorated still demands a caller.
    assert client.get("/stations").status_code == 401
    assert client.get("/stations", headers=env.bearer(env.app_token())).status_code == 200


def test_duplicate_and_query_tokens_are_refused(env: Env) -> None:
    client = make_app(env).test_client()
    token = env.user_token()
    folded = client.get("/me", headers={"Authorization": f"Bearer {token}, Bearer {token}"})
    assert folded.status_code == 400
    assert 'error="invalid_request"' in folded.headers["WWW-Authenticate"]
    assert client.get(f"/me?access_token={token}").status_code == 400


def test_one_validation_per_request_and_with_the_wsgi_middleware(env: Env) -> None:
    built = Built(env)
    app = make_app(env, built)
    client = app.test_client()
    assert client.get("/forecast", headers=env.bearer(env.user_token())).status_code == 200
    (auth,) = built.engines
    assert auth.validations == 1
    app.wsgi_app = EntraWSGIMiddleware(app.wsgi_app, auth=auth)  # type: ignore[method-assign]
    assert client.get("/forecast", headers=env.bearer(env.user_token())).status_code == 200
    assert auth.validations == 2


def test_current_downstream_calls_on_behalf_of_the_caller(env: Env) -> None:
    client = make_app(env).test_client()
    caller = env.user_token()
    env.fake.reset_counts()
    assert client.get("/provider", headers=env.bearer(caller)).json == [{"path": "/forecast"}] * 2
    assert env.fake.request_count("token") == 1
    headers = {header for _, header in env.provider.calls}
    assert len(headers) == 1 and f"Bearer {caller}" not in headers
    (header,) = headers
    assert env.fake.decode(header.removeprefix("Bearer "))["aud"] == env.provider_app.app_id


def test_factory_pattern_with_two_apps_in_two_tenants(env: Env) -> None:
    entra = EntraMW()
    other_tenant = env.fake.add_tenant(domain="fabrikam.onmicrosoft.com")
    other_api = env.fake.add_app(other_tenant, display_name="fabrikam-api", scopes=("Weather.Read",))
    other_client = env.fake.add_app(other_tenant, display_name="fabrikam-client")
    other_user = env.fake.add_user(other_tenant, upn="bob@fabrikam.onmicrosoft.com", password="x")

    def create_app(settings: dict[str, Any]) -> Flask:
        app = Flask(__name__)
        app.config["ENTRA_MW"] = settings
        app.config["ENTRA_MW_AUTH_FACTORY"] = Built(env)
        entra.init_app(app)
        views(app)
        return app

    contoso = create_app(env.settings).test_client()
    fabrikam = create_app({"tenant_id": other_tenant.tenant_id, "client_id": other_api.app_id}).test_client()
    alice = env.bearer(env.user_token())
    bob = env.bearer(env.fake.user_token(other_user, client=other_client, resource=other_api))
    assert contoso.get("/me", headers=alice).json == {"oid": env.scn.user.object_id}
    assert fabrikam.get("/me", headers=bob).json == {"oid": other_user.object_id}
    assert contoso.get("/me", headers=bob).status_code == 401
    assert fabrikam.get("/me", headers=alice).status_code == 401


def test_init_app_not_called_is_a_friendly_error(env: Env) -> None:
    EntraMW()
    app = Flask(__name__)
    views(app)
    app.testing = True  # let the error reach the test instead of a 500 page
    client = app.test_client()
    with pytest.raises(RuntimeError, match=r"did you call EntraMW\(app\) or entra.init_app\(app\)"):
        client.get("/forecast")
    with pytest.raises(RuntimeError, match="init_app"):
        client.get("/me")


def test_configuration_errors_name_the_key(env: Env) -> None:
    app = Flask(__name__)
    with pytest.raises(ConfigurationError, match="ENTRA_MW is not set"):
        EntraMW(app)
    app.config["ENTRA_MW"] = {"tenant_id": env.scn.tenant.tenant_id, "client_id": env.scn.api.app_id, "nope": 1}
    with pytest.raises(ConfigurationError, match="nope"):
        EntraMW(app)
    app.config["ENTRA_MW"] = env.settings
    app.config["ENTRA_MW_AUTH_FACTORY"] = "no.such.module.build"
    with pytest.raises(ConfigurationError, match="ENTRA_MW_AUTH_FACTORY"):
        EntraMW(app)
    with pytest.raises(TypeError):
        EntraMW(auth=object())  # type: ignore[arg-type]


def test_init_app_twice_is_refused(env: Env) -> None:
    app = make_app(env)
    with pytest.raises(RuntimeError, match="already"):
        EntraMW(app)


def test_engine_built_from_settings_lives_as_long_as_its_app(env: Env) -> None:
    built = Built(env)
    app = make_app(env, built)
    client = app.test_client()
    for _ in range(3):
        client.get("/me", headers=env.bearer(env.user_token()))
    (auth,) = built.engines
    assert auth.closed == 0  # not per request
    del app, client
    gc.collect()
    assert auth.closed == 1


def test_an_engine_passed_in_is_shared_and_left_open(env: Env) -> None:
    auth = env.auth()
    entra = EntraMW(auth=auth)
    apps = []
    for _ in range(2):
        app = Flask(__name__)
        entra.init_app(app)  # no ENTRA_MW needed
        views(app)
        apps.append(app)
    for app in apps:
        assert app.test_client().get("/me", headers=env.bearer(env.user_token())).status_code == 200
    assert apps[0].extensions["entra_mw"].auth is apps[1].extensions["entra_mw"].auth is auth
    del apps, app
    gc.collect()
    assert auth.closed == 0
    auth.close()
