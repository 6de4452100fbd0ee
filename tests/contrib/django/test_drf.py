"""DRF: ``EntraAuthentication`` (401 with the challenge, the core's own answer for refused tokens, no database)
and ``HasScopes`` (403 ``insufficient_scope`` with ``scope="..."``)."""

from __future__ import annotations

import json

import pytest
from django.test import Client, override_settings
from rest_framework.permissions import BasePermission

from entra_mw.contrib.django.rest_framework import EntraUser, HasScopes

from ._django import World, bearer


@pytest.mark.parametrize("middleware", [True, False])
def test_authenticated(env: World, middleware: bool) -> None:
    with override_settings(MIDDLEWARE=["entra_mw.contrib.django.EntraMiddleware"] if middleware else []):
        client = Client()
        response = client.get("/drf/authenticated")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Bearer"

        response = client.get("/drf/authenticated", headers=bearer(env.user_token()))
        assert response.status_code == 200
        body = response.json()
        assert body["type"] == "EntraUser"
        assert body["pk"] == body["oid"] == env.s.user.object_id
        assert body["user"] == env.s.user.upn

        response = client.get("/drf/authenticated", headers=bearer(env.user_token() + "x"))
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert json.loads(response.content)["error"] == "invalid_token"


def test_refused_without_middleware_keeps_status_and_retry_after(env: World) -> None:
    with override_settings(MIDDLEWARE=[]):
        token = env.user_token()
        response = Client().get("/drf/authenticated", HTTP_AUTHORIZATION=f"Bearer {token}, Bearer {token}")
        assert response.status_code == 400
        assert 'error="invalid_request"' in response["WWW-Authenticate"]
        env.fake.faults.outage("jwks")
        env.fake.faults.outage("discovery")
        response = Client().get("/drf/authenticated", headers=bearer(token))
        assert response.status_code == 503
        assert response["Retry-After"] == "5"


def test_has_scopes(env: World) -> None:
    client = Client()
    assert client.get("/drf/scoped", headers=bearer(env.user_token())).status_code == 200
    response = client.get("/drf/scoped", headers=bearer(env.app_token()))
    assert response.status_code == 403
    assert response["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')
    assert 'scope="Weather.Read"' in response["WWW-Authenticate"]
    assert response.json()["error"] == "insufficient_scope"
    response = client.get("/drf/scoped")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_has_scopes_roles(env: World) -> None:
    client = Client()
    response = client.get("/drf/role", headers=bearer(env.app_token()))
    assert response.status_code == 200
    assert response.json()["type"] == "EntraUser"
    response = client.get("/drf/role", headers=bearer(env.user_token()))
    assert response.status_code == 403
    assert 'scope="Weather.Read.All"' in response["WWW-Authenticate"]


def test_user_sync_hook(env: World) -> None:
    with override_settings(ENTRA_MW_USER_SYNC="tests.contrib.django.factories.sync_user"):
        response = Client().get("/drf/authenticated", headers=bearer(env.user_token()))
    assert response.status_code == 200
    assert response.json()["type"] == "SyncedUser"
    assert response.json()["user"] == f"synced:{env.s.user.object_id}"


def test_has_scopes_is_a_permission_class() -> None:
    cls = HasScopes(scopes=["A"], roles=["B"])
    assert issubclass(cls, BasePermission)
    assert cls.__name__ == "HasScopes[A,B]"


def test_has_scopes_last_in_an_or(env: World) -> None:
    client = Client()
    # IsAppOnly | HasScopes(scopes=["Weather.Write"]): app tokens pass the first operand, although they have
    # no scope at all; a user token without Weather.Write gets HasScopes's answer.
    assert client.get("/drf/either", headers=bearer(env.app_token())).status_code == 200
    response = client.get("/drf/either", headers=bearer(env.user_token()))
    assert response.status_code == 403
    assert 'scope="Weather.Write"' in response["WWW-Authenticate"]


def test_entra_user_is_not_a_database_user() -> None:
    from entra_mw import Principal

    user = EntraUser(Principal({"oid": "o1", "sub": "s1", "preferred_username": "a@contoso.com"}))
    assert user.is_authenticated and not user.is_anonymous
    assert (user.pk, user.id, user.get_username(), str(user)) == ("o1", "o1", "a@contoso.com", "a@contoso.com")
    assert not user.has_perm("x") and not user.has_perms(["x"]) and not user.has_module_perms("x")
    assert user == EntraUser(Principal({"oid": "o1"}))
    assert "o1" in repr(user)
    app = EntraUser(Principal({"sub": "s2", "azp": "client-id"}))
    assert (app.pk, app.username) == ("s2", "client-id")
