"""``EntraMiddleware`` in sync mode (WSGI handler) and async mode (ASGI handler): the anonymous context, tokens
that are sent but refused, errors views let escape, and that it runs in the handler's own mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, override_settings

from entra_mw import EntraAuth
from entra_mw.contrib.django import EntraMiddleware

from ...asgi._support import http_scope
from ._django import World, bearer


def test_runs_in_the_mode_of_the_handler() -> None:
    def sync_get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    async def async_get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    assert EntraMiddleware.sync_capable and EntraMiddleware.async_capable
    assert not iscoroutinefunction(EntraMiddleware(sync_get_response))
    assert iscoroutinefunction(EntraMiddleware(async_get_response))


def test_sync_anonymous_valid_and_refused(env: World) -> None:
    client = Client()
    assert client.get("/open").json() == {"oid": None, "app": None}
    assert client.get("/open", headers=bearer(env.user_token())).json()["oid"] == env.s.user.object_id

    # Sent but invalid: refused here, even on a view that asks for nothing.
    response = client.get("/open", headers=bearer(env.user_token() + "x"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert json.loads(response.content)["error"] == "invalid_token"

    expired = env.user_token(lifetime=-3600)
    assert client.get("/open", headers=bearer(expired)).status_code == 401
    # A WSGI server folds repeated headers into one value: two credentials are a 400.
    token = env.user_token()
    response = client.get("/open", HTTP_AUTHORIZATION=f"Bearer {token}, Bearer {token}")
    assert response.status_code == 400
    assert 'error="invalid_request"' in response["WWW-Authenticate"]
    assert client.get(f"/open?access_token={token}", headers=bearer(token)).status_code == 400
    # Another scheme is no bearer token at all: anonymous.
    assert client.get("/open", headers={"Authorization": "Basic dXNlcjpwdw=="}).json()["oid"] is None


@pytest.mark.anyio
async def test_async_anonymous_valid_and_refused(env: World) -> None:
    client = AsyncClient()
    assert (await client.get("/open")).json() == {"oid": None, "app": None}
    assert (await client.get("/open", headers=bearer(env.user_token()))).json()["oid"] == env.s.user.object_id
    response = await client.get("/open", headers=bearer(env.user_token() + "x"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


async def asgi_get(*headers: tuple[bytes, bytes]) -> tuple[int, bytes]:
    """One GET through Django's ASGI handler with exactly these headers (repeats kept apart, as servers do)."""
    scope = dict(http_scope("/open", headers=[(b"host", b"testserver"), *headers]))
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await never.wait()  # the client stays connected until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(dict(message))

    await ASGIHandler()(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.anyio
async def test_duplicate_headers_in_the_asgi_scope(env: World) -> None:
    value = f"Bearer {env.user_token()}".encode()
    assert (await asgi_get((b"authorization", value)))[0] == 200
    status, body = await asgi_get((b"authorization", value), (b"authorization", value))
    assert status == 400
    assert b"invalid_request" in body


def test_keys_unavailable_is_503(env: World) -> None:
    env.fake.faults.outage("jwks")
    env.fake.faults.outage("discovery")
    response = Client().get("/open", headers=bearer(env.user_token()))
    assert response.status_code == 503
    assert response["Retry-After"]
    assert "WWW-Authenticate" not in response
    # No token, no need for keys: still anonymous.
    assert Client().get("/open").status_code == 200


@pytest.mark.anyio
async def test_keys_unavailable_is_503_async(env: World) -> None:
    env.fake.faults.outage("jwks")
    env.fake.faults.outage("discovery")
    response = await AsyncClient().get("/sync", headers=bearer(env.user_token()))
    assert response.status_code == 503


def test_errors_raised_by_views_render_themselves(env: World) -> None:
    response = Client().get("/raising", headers=bearer(env.user_token()))
    assert response.status_code == 403
    assert 'scope="Weather.Write"' in response["WWW-Authenticate"]


@pytest.mark.anyio
async def test_errors_raised_by_views_render_themselves_async(env: World) -> None:
    response = await AsyncClient().get("/raising")
    assert response.status_code == 403


def test_one_engine_across_requests(env: World) -> None:
    client = Client()
    for _ in range(3):
        assert client.get("/sync", headers=bearer(env.user_token())).status_code == 200
    assert len(env.built) == 1
    assert isinstance(env.built[0], EntraAuth)


def test_misconfiguration_is_a_server_error_not_a_client_answer(env: World) -> None:
    from entra_mw import ConfigurationError

    with override_settings(ENTRA_MW=None):
        with pytest.raises(ConfigurationError, match="ENTRA_MW is not set"):
            Client().get("/open")


def test_context_is_typed_and_reprs_without_the_token(env: World) -> None:
    from django.test import RequestFactory

    from entra_mw.contrib.django import get_context
    from entra_mw.contrib.django.middleware import get_context_or_authenticate

    token = env.user_token()
    request = RequestFactory().get("/", headers=bearer(token))
    with pytest.raises(LookupError, match="EntraMiddleware"):
        get_context(request)
    ctx = get_context_or_authenticate(request)
    assert get_context(request) is ctx
    assert getattr(request, "entra") is ctx
    assert token not in repr(ctx)
    seen: Any = ctx.principal
    assert seen.oid == env.s.user.object_id


def test_required_with_excluded_paths(env: World) -> None:
    with override_settings(ENTRA_MW_REQUIRED=True, ENTRA_MW_EXCLUDE_PATHS=["/open", "/cbv/*"]):
        client = Client()
        response = client.get("/raising")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Bearer"
        assert client.get("/raising", headers=bearer(env.user_token())).status_code == 403  # the view's own error
        assert client.get("/open").json() == {"oid": None, "app": None}
        assert client.get("/open", headers=bearer(env.user_token() + "x")).status_code == 401  # still checked
        assert client.get("/cbv/sync").status_code == 401  # excluded, but the view requires a token
        assert client.get("/cbv/sync", headers=bearer(env.user_token())).status_code == 200
    assert Client().get("/raising").status_code == 403  # back to the default: no token, anonymous


@pytest.mark.anyio
async def test_required_async(env: World) -> None:
    with override_settings(ENTRA_MW_REQUIRED=True):
        response = await AsyncClient().get("/open")
        assert response.status_code == 401
        assert (await AsyncClient().get("/open", headers=bearer(env.user_token()))).status_code == 200
