"""The weather API: a scope-checked forecast, an app-role-only station list, and forecasts fetched from a
downstream provider On-Behalf-Of the caller (async and sync endpoints alike)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException

from entra_mw import EntraAuth, EntraConfig, Principal
from entra_mw.contrib.fastapi import DownstreamDep, require, setup

READ = require(scopes=["Weather.Read"])  # a signed-in user who granted the app Weather.Read
STATIONS = require(roles=["Weather.Read.All"])  # an app calling with its own identity and that app role


def create_app(auth: EntraAuth | None = None) -> FastAPI:
    """The app for ``auth`` (default: the sidecar's ``AzureAd__*`` / ``DownstreamApis__*`` variables)."""
    app = FastAPI(title="Weather API")
    setup(app, auth or EntraAuth(EntraConfig.from_env()))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/forecast")
    async def forecast(user: Annotated[Principal, Depends(READ)]) -> dict[str, Any]:
        return {"for": user.preferred_username or user.oid, "forecast": [{"day": "Mon", "celsius": 21}]}

    @app.get("/stations", dependencies=[Depends(STATIONS)])
    def stations() -> dict[str, Any]:
        return {"stations": ["Seattle", "Redmond"]}

    @app.get("/forecast/provider")
    async def provider_forecast(user: Annotated[Principal, Depends(READ)], downstream: DownstreamDep) -> Any:
        # A new token for the provider, On-Behalf-Of the caller (cached per user); never the caller's own token.
        response = await downstream.acall("provider", "forecast")
        return _relay(response.status_code, response.json())

    @app.get("/alerts")
    def alerts(user: Annotated[Principal, Depends(READ)], downstream: DownstreamDep) -> Any:
        # Sync endpoints run in FastAPI's thread pool: the blocking call leaves the event loop free.
        response = downstream.call("provider", "alerts")
        return _relay(response.status_code, response.json())

    return app


def _relay(status: int, body: Any) -> Any:
    if status != 200:
        raise HTTPException(502, detail=f"the forecast provider answered {status}")
    return body
