"""Views the unit tests drive: every shape ``require`` supports, DRF views, and views using ``downstream``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils.decorators import method_decorator
from django.views import View
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from entra_mw import AuthContext, InsufficientScope
from entra_mw.contrib.django import get_context, require
from entra_mw.contrib.django.rest_framework import HasScopes

READ = require(scopes=["Weather.Read"])


def _who(request: HttpRequest) -> dict[str, Any]:
    principal = get_context(request).principal
    return {"oid": principal.oid if principal else None, "app": principal.is_app if principal else None}


def open_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@READ
def sync_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@READ
async def async_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@require(roles=["Weather.Read.All"])
def role_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


@require()
async def any_token_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_who(request))


def raising_view(request: HttpRequest) -> JsonResponse:
    raise InsufficientScope(["Weather.Write"])


@method_decorator(READ, name="dispatch")
class SyncClassView(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(_who(request))


@method_decorator(READ, name="dispatch")
class AsyncClassView(View):
    async def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(_who(request))


@method_decorator(READ, name="get")
class AsyncHandlerView(View):
    async def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(_who(request))


class AsyncPlainView(View):
    async def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(_who(request))


class SyncPlainView(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(_who(request))


@READ
def sync_downstream(request: HttpRequest) -> JsonResponse:
    header = get_context(request).downstream.authorization_header("forecast")
    return JsonResponse({"authorization": header})


@READ
async def async_downstream(request: HttpRequest) -> JsonResponse:
    header = await get_context(request).downstream.aauthorization_header("forecast")
    return JsonResponse({"authorization": header})


def _drf_who(request: Request) -> dict[str, Any]:
    ctx: Any = request.auth
    assert isinstance(ctx, AuthContext)
    assert ctx.principal is not None
    return {
        "user": str(request.user),
        "pk": request.user.pk,
        "oid": ctx.principal.oid,
        "type": type(request.user).__name__,
    }


class DrfAuthenticated(APIView):
    permission_classes = (IsAuthenticated,)

    def get(self, request: Request) -> Response:
        return Response(_drf_who(request))


class DrfScoped(APIView):
    permission_classes = (HasScopes(scopes=["Weather.Read"]),)

    def get(self, request: Request) -> Response:
        return Response(_drf_who(request))


class DrfRole(APIView):
    permission_classes = (HasScopes(roles=["Weather.Read.All"]),)

    def get(self, request: Request) -> Response:
        return Response(_drf_who(request))


class IsAppOnly(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        ctx: Any = request.auth
        return isinstance(ctx, AuthContext) and ctx.principal is not None and ctx.principal.is_app


class DrfEither(APIView):
    permission_classes = (IsAppOnly | HasScopes(scopes=["Weather.Write"]),)

    def get(self, request: Request) -> Response:
        return Response(_drf_who(request))


urlpatterns = [
    path("open", open_view),
    path("sync", sync_view),
    path("async", async_view),
    path("role", role_view),
    path("any", any_token_view),
    path("raising", raising_view),
    path("cbv/sync", SyncClassView.as_view()),
    path("cbv/async", AsyncClassView.as_view()),
    path("cbv/async-handler", AsyncHandlerView.as_view()),
    path("cbv/as-view/async", READ(AsyncPlainView.as_view())),
    path("cbv/as-view/sync", READ(SyncPlainView.as_view())),
    path("downstream/sync", sync_downstream),
    path("downstream/async", async_downstream),
    path("drf/authenticated", DrfAuthenticated.as_view()),
    path("drf/scoped", DrfScoped.as_view()),
    path("drf/role", DrfRole.as_view()),
    path("drf/either", DrfEither.as_view()),
]
