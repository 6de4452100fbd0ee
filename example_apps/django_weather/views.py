"""The weather API: a scope-checked view, an app-role-only view, a DRF view, and a view that calls the
forecast API On-Behalf-Of its caller."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from entra_mw import AuthContext
from entra_mw.contrib.django import get_context, require
from entra_mw.contrib.django.rest_framework import HasScopes


@require(scopes=["Weather.Read"])
async def forecast(request: HttpRequest) -> JsonResponse:
    """Delegated callers with ``Weather.Read``."""
    principal = get_context(request).principal
    assert principal is not None  # require() let the request in
    return JsonResponse({"forecast": "sunny", "for": principal.preferred_username or principal.oid})


@require(roles=["Weather.Read.All"])
def stations(request: HttpRequest) -> JsonResponse:
    """Applications holding the ``Weather.Read.All`` app role (client credentials), no user involved."""
    principal = get_context(request).principal
    assert principal is not None
    return JsonResponse({"stations": ["Seattle", "Redmond"], "client": principal.client_id})


@require(scopes=["Weather.Read"])
async def outlook(request: HttpRequest) -> JsonResponse:
    """Calls the forecast API On-Behalf-Of the caller: a new token for that API, never the caller's own."""
    response = await get_context(request).downstream.acall("forecast", "outlook")
    return JsonResponse({"outlook": response.json(), "status": response.status_code})


class Observations(APIView):
    """DRF: users with ``Weather.Read`` or apps with ``Weather.Read.All``."""

    permission_classes = (HasScopes(scopes=["Weather.Read"], roles=["Weather.Read.All"]),)

    def get(self, request: Request) -> Response:
        ctx: Any = request.auth
        assert isinstance(ctx, AuthContext)
        assert ctx.principal is not None
        return Response({"temperature_c": 14, "caller": str(request.user), "app_only": ctx.principal.is_app})
