"""DownstreamDep in async and sync endpoints: On-Behalf-Of the caller with a new token, cached, and a blocking call
from FastAPI's thread pool leaves the event loop free."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from entra_mw.contrib.fastapi import DownstreamDep, PrincipalDep, setup

from .._support import Env


def build(env: Env) -> tuple[FastAPI, Any]:
    auth = env.auth()
    app = FastAPI()
    setup(app, auth)

    @app.get("/async")
    async def via_async(downstream: DownstreamDep) -> Any:
        return (await downstream.acall("provider", "forecast")).json()

    @app.get("/sync")
    def via_sync(downstream: DownstreamDep) -> Any:
        return downstream.call("provider", "alerts").json()

    @app.get("/ping")
    async def ping(user: PrincipalDep) -> str:
        pinged.set()
        return "pong"

    pinged = threading.Event()
    app.state.pinged = pinged
    return app, auth


def test_sync_and_async_endpoints_call_on_behalf_of_the_caller(env: Env) -> None:
    app, _ = build(env)
    caller = env.user_token()
    env.fake.reset_counts()
    with TestClient(app) as client:
        assert client.get("/async", headers=env.bearer(caller)).json() == {"path": "/forecast"}
        assert client.get("/sync", headers=env.bearer(caller)).json() == {"path": "/alerts"}
        assert client.get("/async", headers=env.bearer(caller)).status_code == 200
    assert env.fake.request_count("token") == 1  # one OBO exchange, then the cache
    headers = {header for _, header in env.provider.calls}
    assert len(env.provider.calls) == 3 and len(headers) == 1
    (header,) = headers
    assert header.startswith("Bearer ") and header != f"Bearer {caller}"
    claims = env.fake.decode(header.removeprefix("Bearer "))
    assert claims["aud"] == env.provider_app.app_id
    assert claims["oid"] == env.scn.user.object_id


def test_downstream_needs_a_caller(env: Env) -> None:
    app, _ = build(env)
    with TestClient(app) as client:
        response = client.get("/sync")
    assert response.status_code == 401
    assert env.provider.calls == []


def test_downstream_errors_render(env: Env) -> None:
    app, _ = build(env)
    env.fake.faults.garbage("token")  # Entra answers with something unusable: a gateway error for the caller
    with TestClient(app) as client:
        response = client.get("/async", headers=env.bearer(env.user_token()))
        unconfigured = client.get("/sync", headers=env.bearer(env.user_token()))
    # The core picks the status (a gateway error or "try again later"); the handler only renders it.
    assert response.status_code in (502, 503)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"]
    assert unconfigured.status_code in (502, 503)
    assert env.provider.calls == []


@pytest.mark.anyio
async def test_a_sync_downstream_call_does_not_block_the_event_loop(env: Env) -> None:
    app, auth = build(env)
    entered = threading.Event()
    pinged: threading.Event = app.state.pinged
    seen: list[bool] = []

    def slow_provider(request: httpx2.Request) -> None:
        # The provider answers only once the app has served /ping: impossible if the sync call held the loop.
        entered.set()
        seen.append(pinged.wait(10))

    env.provider.hook = slow_provider
    token = env.user_token()
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as client:

        async def ping_when_the_call_is_under_way() -> httpx2.Response:
            await anyio.to_thread.run_sync(entered.wait, 10)
            return await client.get("/ping", headers=env.bearer(token))

        results: dict[str, httpx2.Response] = {}

        async def run(name: str, call: Any) -> None:
            results[name] = await call()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "sync", lambda: client.get("/sync", headers=env.bearer(token)))
            tg.start_soon(run, "ping", ping_when_the_call_is_under_way)
    assert results["ping"].text == '"pong"'
    assert results["sync"].json() == {"path": "/alerts"}
    assert seen == [True]
    await auth.aclose()
