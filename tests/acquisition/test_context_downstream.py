"""``scope["entra_mw"].downstream`` from the ASGI middleware: OBO for the verified caller, app-only for an
anonymous request, agent views from the same context; built once per request."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import httpx2
import pytest

from entra_mw import AuthContext, ClientSecret, DownstreamApi, EntraAuth, EntraConfig
from entra_mw.asgi import EntraMiddleware
from entra_mw.testing import FakeClock, FakeEntra, Scenario

from ._routing import RoutingTransport

API_HOST = "weather.example"
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def weather_api(fake: FakeEntra) -> Callable[[httpx2.Request], httpx2.Response]:
    def handle(request: httpx2.Request) -> httpx2.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        claims = fake.decode(token)
        return httpx2.Response(200, json={k: claims.get(k) for k in ("azp", "oid", "idtyp", "xms_par_app_azp")})

    return handle


async def agent_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The protected app: reads ``scope["entra_mw"]`` and calls the weather API in the flow the path names."""
    ctx: AuthContext = scope["entra_mw"]
    assert ctx.downstream is ctx.downstream  # built once per request
    downstream = ctx.downstream
    agent_id = scope["query_string"].decode().partition("agent=")[2]
    if agent_id:
        downstream = downstream.for_agent(agent_id)
    if scope["path"] == "/header":
        header = await downstream.aauthorization_header("weather")
        body = json.dumps({"ok": header.startswith("Bearer ")}).encode()
    else:
        response = await downstream.acall("weather", "forecast")
        body = response.content
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def setup(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[tuple[FakeEntra, Scenario, EntraAuth]]:
    scn = fake_entra.quickstart()
    resource = scn.api.identifier_uris[0]
    transport = RoutingTransport(
        {API_HOST: weather_api(fake_entra)},
        fallback=fake_entra.transport,
        afallback=fake_entra.async_transport,
    )
    config = EntraConfig(
        tenant_id=scn.tenant.tenant_id,
        client_id=scn.blueprint.app_id,
        credentials=(ClientSecret(scn.blueprint_secret),),
        downstream_apis={
            "weather": DownstreamApi(base_url=f"https://{API_HOST}/", scopes=(f"{resource}/Weather.Read",)),
        },
    )
    auth = EntraAuth(config, transport=transport, async_transport=transport, clock=fake_clock)
    try:
        yield fake_entra, scn, auth
    finally:
        auth.close()


def client_for(auth: EntraAuth, *, required: bool = True) -> httpx2.AsyncClient:
    app = EntraMiddleware(agent_app, auth=auth, required=required)
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://agent.local")


@pytest.mark.anyio
async def test_middleware_context_does_obo_for_the_caller(
    setup: tuple[FakeEntra, Scenario, EntraAuth],
) -> None:
    fake, scn, auth = setup
    tc = fake.user_token(scn.user, client=scn.client, resource=scn.blueprint, scopes=["access_agent"])
    async with client_for(auth) as client:
        response = await client.get("/call", headers={"Authorization": f"Bearer {tc}"})
        assert response.status_code == 200
        assert response.json() == {
            "azp": scn.blueprint.app_id,
            "oid": scn.user.object_id,
            "idtyp": "user",
            "xms_par_app_azp": None,
        }
        response = await client.get(f"/call?agent={scn.agent.app_id}", headers={"Authorization": f"Bearer {tc}"})
        assert response.json()["azp"] == scn.agent.app_id
        assert response.json()["oid"] == scn.user.object_id
        assert response.json()["xms_par_app_azp"] == scn.blueprint.app_id
        response = await client.get("/header", headers={"Authorization": f"Bearer {tc}"})
        assert response.json() == {"ok": True}
        # Unauthenticated requests never reach the app, so no downstream token is requested for them.
        before = fake.request_count("token")
        assert (await client.get("/call")).status_code == 401
        assert fake.request_count("token") == before
    await auth.aclose()


@pytest.mark.anyio
async def test_anonymous_context_gets_app_tokens_for_app_apis(setup: tuple[FakeEntra, Scenario, EntraAuth]) -> None:
    fake, scn, _ = setup
    resource = scn.api.identifier_uris[0]
    config = EntraConfig(
        tenant_id=scn.tenant.tenant_id,
        client_id=scn.blueprint.app_id,
        credentials=(ClientSecret(scn.blueprint_secret),),
        downstream_apis={
            "weather": DownstreamApi(
                base_url=f"https://{API_HOST}/", scopes=(f"{resource}/.default",), request_app_token=True
            )
        },
    )
    transport = RoutingTransport({API_HOST: weather_api(fake)}, fallback=fake.transport, afallback=fake.async_transport)
    anon_auth = EntraAuth(config, transport=transport, async_transport=transport, clock=fake.clock)
    async with client_for(anon_auth, required=False) as client:
        response = await client.get(f"/call?agent={scn.agent.app_id}")
        assert response.status_code == 200
        assert response.json()["azp"] == scn.agent.app_id
        assert response.json()["idtyp"] == "app"
    await anon_auth.aclose()


def test_auth_context_builds_its_downstream_lazily_and_once(
    setup: tuple[FakeEntra, Scenario, EntraAuth],
) -> None:
    fake, scn, auth = setup
    tc = fake.user_token(scn.user, client=scn.client, resource=scn.blueprint, scopes=["access_agent"])
    principal = auth.validate(tc)
    ctx = AuthContext(auth, principal, tc)
    downstream = ctx.downstream
    assert downstream is ctx.downstream
    assert downstream.principal is principal
    assert tc not in repr(ctx) + repr(downstream)
    header = downstream.authorization_header("weather")
    claims = fake.decode(header.removeprefix("Bearer "))
    assert claims["oid"] == scn.user.object_id
    assert claims["azp"] == scn.blueprint.app_id
