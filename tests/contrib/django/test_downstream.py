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


@pytest.mark.anyio
async def test_async_view_does_not_block_the_event_loop(env: World) -> None:
    """While the token request is slow (FakeEntra answers after 0.3 s), other work on the loop goes on."""
    import asyncio

    env.fake.faults.latency("token", 0.3)
    caller = env.user_token()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        response = await AsyncClient().get("/downstream/async", headers=bearer(caller))
    finally:
        done.set()
        await task
    assert response.status_code == 200
    _check(env, response.json()["authorization"], caller)
    assert ticks >= 10, f"the loop was blocked: {ticks} ticks in a 0.3 s token request"
