"""``require`` on sync and async function views and on class-based views (``method_decorator`` on
``dispatch`` or on the handler), with and without the middleware."""

from __future__ import annotations

import inspect
import json

import pytest
from asgiref.sync import iscoroutinefunction
from django.test import AsyncClient, Client, override_settings

from entra_mw import Requirement
from entra_mw.contrib.django import require

from . import urls
from ._django import World, bearer

SCOPED = ["/sync", "/async", "/cbv/sync", "/cbv/async", "/cbv/async-handler", "/cbv/as-view/async", "/cbv/as-view/sync"]


@pytest.mark.parametrize("path", SCOPED)
def test_scoped_views_sync_handler(env: World, path: str) -> None:
    client = Client()
    response = client.get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert json.loads(response.content)["error"] == "unauthorized"

    response = client.get(path, headers=bearer(env.user_token()))
    assert response.status_code == 200
    assert response.json() == {"oid": env.s.user.object_id, "app": False}

    # A valid app-only token has no scp: 403 naming the scope it lacks.
    response = client.get(path, headers=bearer(env.app_token()))
    assert response.status_code == 403
    assert response["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')
    assert 'scope="Weather.Read"' in response["WWW-Authenticate"]


@pytest.mark.anyio
@pytest.mark.parametrize("path", SCOPED)
async def test_scoped_views_async_handler(env: World, path: str) -> None:
    client = AsyncClient()
    response = await client.get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    response = await client.get(path, headers=bearer(env.user_token()))
    assert response.status_code == 200
    assert response.json()["oid"] == env.s.user.object_id
    response = await client.get(path, headers=bearer(env.app_token()))
    assert response.status_code == 403
    assert 'scope="Weather.Read"' in response["WWW-Authenticate"]


def test_role_view_takes_app_tokens_only(env: World) -> None:
    client = Client()
    response = client.get("/role", headers=bearer(env.app_token()))
    assert response.status_code == 200
    assert response.json()["app"] is True
    response = client.get("/role", headers=bearer(env.user_token()))
    assert response.status_code == 403
    assert 'scope="Weather.Read.All"' in response["WWW-Authenticate"]


@pytest.mark.anyio
async def test_require_without_arguments_takes_any_valid_token(env: World) -> None:
    client = AsyncClient()
    assert (await client.get("/any")).status_code == 401
    assert (await client.get("/any", headers=bearer(env.app_token()))).status_code == 200
    assert (await client.get("/any", headers=bearer(env.user_token()))).status_code == 200


@pytest.mark.parametrize("path", ["/sync", "/cbv/sync"])
def test_without_the_middleware_the_decorator_authenticates(env: World, path: str) -> None:
    with override_settings(MIDDLEWARE=[]):
        client = Client()
        assert client.get(path, headers=bearer(env.user_token())).status_code == 200
        response = client.get(path, headers=bearer(env.user_token() + "x"))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response["WWW-Authenticate"]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/async", "/cbv/async", "/cbv/async-handler"])
async def test_without_the_middleware_async_views_authenticate_themselves(env: World, path: str) -> None:
    with override_settings(MIDDLEWARE=[]):
        client = AsyncClient()
        assert (await client.get(path, headers=bearer(env.user_token()))).status_code == 200
        assert (await client.get(path)).status_code == 401


def test_decorated_views_keep_their_shape() -> None:
    assert iscoroutinefunction(urls.async_view)
    assert inspect.iscoroutinefunction(urls.async_view)
    assert not iscoroutinefunction(urls.sync_view)
    assert urls.sync_view.__name__ == "sync_view"
    assert urls.AsyncClassView.view_is_async


def test_bad_requirements_fail_at_decoration() -> None:
    with pytest.raises(ValueError, match="scopes"):
        require(scopes=["ok", ""])
    assert Requirement(scopes="a b").scopes == ("a", "b")
