"""The Django views the adversarial tests protect: a plain view with ``require`` and a DRF view with
``HasScopes``, each needing the scope ``Tools.Use`` or the app role ``Tools.All``."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from entra_mw.contrib.django import require
from entra_mw.contrib.django.rest_framework import HasScopes

from ._adapters import ROLE, SCOPE


@require(scopes=[SCOPE], roles=[ROLE])
def me(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


class Me(APIView):
    permission_classes = (HasScopes(scopes=[SCOPE], roles=[ROLE]),)

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


urlpatterns = [path("me", me), path("drf/me", Me.as_view())]
