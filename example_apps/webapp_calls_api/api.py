"""The protected API: validates the bearer token (this library's WSGI middleware) and returns the caller's claims
when the token carries the ``access_as_user`` scope."""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from entra_mw import EntraAuth, EntraError, Requirement
from entra_mw.wsgi import EntraWSGIMiddleware, get_context

#: The delegated scope the API exposes (``api://{api client id}/access_as_user``).
SCOPE = "access_as_user"


def create_api(auth: EntraAuth) -> Flask:
    """The API app: ``GET /health`` (open) and ``GET /api/claims`` (a user token with ``access_as_user``)."""
    api = Flask("webapp_calls_api.api")
    needs = Requirement(scopes=[SCOPE])

    @api.errorhandler(EntraError)
    def refused(exc: EntraError) -> tuple[bytes, int, list[tuple[str, str]]]:
        return exc.body(), exc.status_code, exc.headers()

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/api/claims")
    def claims() -> dict[str, Any]:
        caller = get_context(request.environ).require(needs)
        return {
            "message": f"Hello {caller.get('name') or 'caller'}, the API validated your token.",
            "oid": caller.oid,
            "tid": caller.tid,
            "scopes": sorted(caller.scopes),
            "client_id": caller.client_id,
            "preferred_username": caller.get("preferred_username"),
        }

    api.wsgi_app = EntraWSGIMiddleware(api.wsgi_app, auth=auth, exclude_paths=["/health"])  # type: ignore[method-assign]
    return api
