"""The weather API: a scope-checked forecast, an app-role-only station list, and a forecast fetched from a
downstream provider On-Behalf-Of the caller. Built by an app factory, as Flask apps usually are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, abort

from entra_mw.contrib.flask import EntraMW, current_downstream, current_principal, require

entra = EntraMW()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app; ``config`` overrides the defaults (``ENTRA_MW = "env"``: the sidecar's ``AzureAd__*`` and
    ``DownstreamApis__*`` variables)."""
    app = Flask(__name__)
    app.config["ENTRA_MW"] = "env"
    app.config["ENTRA_MW_EXCLUDE_PATHS"] = ["/healthz"]
    app.config.update(config or {})
    entra.init_app(app)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/forecast")
    @require(scopes=["Weather.Read"])
    def forecast() -> dict[str, Any]:
        who = current_principal.preferred_username or current_principal.oid
        return {"for": who, "forecast": [{"day": "Mon", "celsius": 21}]}

    @app.get("/stations")
    @require(roles=["Weather.Read.All"])
    def stations() -> dict[str, Any]:
        return {"stations": ["Seattle", "Redmond"]}

    @app.get("/forecast/provider")
    @require(scopes=["Weather.Read"])
    def provider_forecast() -> Any:
        # A new token for the provider, On-Behalf-Of the caller (cached per user); never the caller's own token.
        response = current_downstream.call("provider", "forecast")
        if response.status_code != 200:
            abort(502, description=f"the forecast provider answered {response.status_code}")
        return response.json()

    return app
