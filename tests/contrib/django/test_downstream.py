"""``request.entra.downstream`` from sync and async views: On-Behalf-Of the caller, a new token for the
forecast API (never the caller's), one token request for repeated calls."""

from __future__ import annotations

import pytest
from django.test import AsyncClient, Client

from ._django import World, bearer


def _check(env: World, header: str, caller: str) -> None:
    assert header.startswith("Bearer ")
    token = header.removeprefix("Bearer ")
    assert token != caller
    claims = env.fake.decode(token)
    assert claims["aud"] == env.forecast.app_id
    assert claims["oid"] == env.s.user.object_id
    assert claims["scp"] == "Forecast.Read"


def test_sync_view(env: World) -> None:
    caller = env.user_token()
    client = Client()
    first = client.get("/downstream/sync", headers=bearer(caller)).json()["authorization"]
    second = client.get("/downstream/sync", headers=bearer(caller)).json()["authorization"]
    _check(env, first, caller)
    assert first == second
    assert env.fake.request_count("token:jwt_bearer") == 1


@pytest.mark.anyio
async def test_async_view(env: World) -> None:
    caller = env.user_token()
    client = AsyncClient()
    first = (await client.get("/downstream/async", headers=bearer(caller))).json()["authorization"]
    second = (await client.get("/downstream/async", headers=bearer(caller))).json()["authorization"]
    _check(env, first, caller)
    assert first == second
    assert env.fake.request_count("token:jwt_bearer") == 1
