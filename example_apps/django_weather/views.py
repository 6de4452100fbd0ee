"""The weather API: a scope-checked forecast, an app-role-only station list, a DRF view for either, and a
forecast fetched from a downstream provider On-Behalf-Of the caller."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from entra_mw import AuthContext
from entra_mw.contrib.django import get_context, require
from entra_mw.contrib.django.rest_framework import HasScopes


def healthz(request: HttpRequest) -> JsonResponse:
    """No token needed: the middleware lets requests without one through, and this view asks for nothing."""
    return JsonResponse({"status": "ok"})


@require(scopes=["Weather.Read"])
async def forecast(request: HttpRequest) -> JsonResponse:
    """Delegated callers with ``Weather.Read``."""
    principal = get_context(request).principal
    assert principal is not None  # require() let the request in
    return JsonResponse(
        {"for": principal.preferred_username or principal.oid, "forecast": [{"day": "Mon", "celsius": 21}]}
    )


@require(roles=["Weather.Read.All"])
def stations(request: HttpRequest) -> JsonResponse:
    """Applications holding the ``Weather.Read.All`` app role (client credentials), no user involved."""
    return JsonResponse({"stations": ["Seattle", "Redmond"]})


@require(scopes=["Weather.Read"])
async def provider_forecast(request: HttpRequest) -> JsonResponse:
    """The provider's forecast, fetched with a new token for the provider On-Behalf-Of the caller (cached per
    user), never the caller's own token."""
    response = await get_context(request).downstream.acall("provider", "forecast")
    if response.status_code != 200:
        return JsonResponse(
            {"error": "bad_gateway", "error_description": f"the forecast provider answered {response.status_code}"},
            status=502,
        )
    body: dict[str, Any] = response.json()
    return JsonResponse(body)


class Observations(APIView):
    """DRF: users with ``Weather.Read`` or apps with ``Weather.Read.All``."""

    permission_classes = (HasScopes(scopes=["Weather.Read"], roles=["Weather.Read.All"]),)

    def get(self, request: Request) -> Response:
        ctx: Any = request.auth
        assert isinstance(ctx, AuthContext)
        assert ctx.principal is not None
        return Response({"temperature_c": 14, "caller": str(request.user), "app_only": ctx.principal.is_app})
