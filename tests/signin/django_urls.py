"""URLs for the Django sign-in tests: the sign-in routes under /auth/ and views using the signed-in user."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path

from entra_mw import SignInRequired
from entra_mw.contrib.django.signin import (
    aauthorization_header,
    aget_downstream,
    aget_user,
    authorization_header,
    get_downstream,
    get_user,
    login_required,
)


def index(request: HttpRequest) -> HttpResponse:
    user = get_user(request)
    return HttpResponse(f"hello {user.name}" if user else "hello stranger")


@login_required
def me(request: HttpRequest) -> JsonResponse:
    user = get_user(request)
    scope = request.GET.get("scope", "")
    return JsonResponse({"oid": user.oid, "header": authorization_header(request, [scope])[:10] if scope else None})


@login_required
async def ame(request: HttpRequest) -> JsonResponse:
    user = await aget_user(request)
    scope = request.GET.get("scope", "")
    header = await aauthorization_header(request, [scope]) if scope else None
    return JsonResponse({"oid": user.oid, "header": header[:10] if header else None})


@login_required
def token(request: HttpRequest) -> JsonResponse:
    header = get_downstream(request).authorization_header("custom", scopes=[request.GET["scope"]])
    return JsonResponse({"header": header[:10]})


@login_required
async def atoken(request: HttpRequest) -> JsonResponse:
    downstream = await aget_downstream(request)
    header = await downstream.aauthorization_header("custom", scopes=[request.GET["scope"]])
    return JsonResponse({"header": header[:10]})


@login_required
def gone(request: HttpRequest) -> HttpResponse:
    raise SignInRequired("the refresh token was revoked")


urlpatterns = [
    path("", index),
    path("me", me),
    path("ame", ame),
    path("gone", gone),
    path("token", token),
    path("atoken", atoken),
    path("auth/", include("entra_mw.contrib.django.signin_urls")),
]
