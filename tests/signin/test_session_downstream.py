"""Downstream for a signed-in web user: delegated tokens from the session through the engine's token cache
(keyed by the session, single flight), with Downstream's call rules."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx2
import pytest

from entra_mw import (
    ClientSecret,
    DownstreamApi,
    DownstreamRequestError,
    EntraAuth,
    EntraConfig,
    SignInRequired,
    WebSignIn,
)
from entra_mw.testing import FakeClock, FakeEntra
from tests.acquisition._routing import RoutingTransport

from .conftest import REDIRECT

WEATHER = "weather.example"


class World:
    def __init__(self, fake: FakeEntra, clock: FakeClock) -> None:
        self.fake = fake
        self.s = fake.quickstart()
        self.web = fake.add_app(self.s.tenant, display_name="weather-web", redirect_uris=[REDIRECT])
        self.scope = f"{self.s.api.identifier_uris[0]}/Weather.Read"
        self.seen: list[str] = []
        self.transport = RoutingTransport(
            {WEATHER: self.weather}, fallback=fake.transport, afallback=fake.async_transport
        )
        self.auth = EntraAuth(
            EntraConfig(
                tenant_id=self.s.tenant.tenant_id,
                client_id=self.web.app_id,
                credentials=[ClientSecret(fake.add_secret(self.web))],
                downstream_apis={"weather": DownstreamApi(base_url=f"https://{WEATHER}/", scopes=[self.scope])},
            ),
            transport=self.transport,
            async_transport=self.transport,
            clock=clock,
        )
        self.signin = WebSignIn(self.auth, scopes=[self.scope])

    def weather(self, request: httpx2.Request) -> httpx2.Response:
        header = request.headers.get("authorization", "")
        self.seen.append(header)
        claims = self.fake.decode(header.split(" ", 1)[1])
        return httpx2.Response(200, json={"path": request.url.path, "oid": claims["oid"], "scp": claims["scp"]})

    def session(self) -> str:
        start = self.signin.start(redirect_uri=REDIRECT)
        answer = self.fake.sign_in(start.url, username=self.s.user.upn, password=self.s.user_password)
        return self.signin.finish(start.pending_id, answer).session_id


@pytest.fixture
def world(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[World]:
    w = World(fake_entra, fake_clock)
    with w.auth:
        yield w


def test_calls_an_api_for_the_signed_in_user(world: World) -> None:
    session = world.session()
    downstream = world.signin.downstream(session)
    assert session not in repr(downstream) and world.s.user.object_id in repr(downstream)
    answer = downstream.call("weather", "forecast")
    assert answer.json() == {"path": "/forecast", "oid": world.s.user.object_id, "scp": "Weather.Read"}
    before = world.fake.request_count("token")
    header = world.signin.downstream(session).authorization_header("weather")
    assert header == world.seen[-1]  # the engine's cache: no new token request, same token
    assert world.fake.request_count("token") == before


def test_sessions_never_share_tokens(world: World) -> None:
    one, two = world.session(), world.session()
    first = world.signin.downstream(one).authorization_header("weather")
    second = world.signin.downstream(two).authorization_header("weather")
    assert first != second


def test_concurrent_requests_of_one_session_refresh_once(world: World) -> None:
    session = world.session()
    world.fake.grant_consent(world.web, world.s.blueprint, ["access_agent"])
    other = f"{world.s.blueprint.identifier_uris[0]}/access_agent"
    before = world.fake.request_count("token")
    barrier = threading.Barrier(8)
    results: list[str] = []

    def ask() -> None:
        barrier.wait()
        results.append(world.signin.downstream(session).authorization_header("custom", scopes=[other]))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 8 and len(set(results)) == 1
    assert world.fake.request_count("token") == before + 1


def test_signed_out_session_gets_nothing(world: World) -> None:
    session = world.session()
    world.signin.downstream(session).authorization_header("weather")
    world.signin.sign_out(session)
    with pytest.raises(SignInRequired):
        world.signin.downstream(session)
    with pytest.raises(SignInRequired):
        world.signin.downstream(None)


def test_downstream_rules_still_hold(world: World) -> None:
    downstream = world.signin.downstream(world.session())
    with pytest.raises(DownstreamRequestError):
        downstream.call("weather", "https://evil.example/x")
    with pytest.raises(DownstreamRequestError):
        downstream.call("weather", "forecast", headers={"Authorization": "Bearer mine"})
    with pytest.raises(DownstreamRequestError, match="agent"):
        downstream.for_agent("00000000-0000-0000-0000-00000000a9e1")


def test_claims_challenge_gets_a_new_token_and_one_retry(world: World) -> None:
    session = world.session()
    downstream = world.signin.downstream(session)
    first = downstream.authorization_header("weather")
    calls: list[str] = []

    def challenging(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.headers["authorization"])
        if len(calls) == 1:
            claims = '{"access_token":{"nbf":{"essential":true,"value":"1"}}}'
            import base64

            encoded = base64.b64encode(claims.encode()).decode()
            return httpx2.Response(
                401, headers={"WWW-Authenticate": f'Bearer error="insufficient_claims", claims="{encoded}"'}
            )
        return httpx2.Response(200, json={"ok": True})

    world.transport._routes[WEATHER] = challenging
    assert downstream.call("weather", "forecast").json() == {"ok": True}
    assert calls[0] == first and calls[1] != first and len(calls) == 2


@pytest.mark.anyio
async def test_async(world: World) -> None:
    session = world.session()
    downstream = await world.signin.adownstream(session)
    answer = await downstream.acall("weather", "today")
    assert json.loads(answer.content)["oid"] == world.s.user.object_id
    assert (await downstream.aauthorization_header("weather")).startswith("Bearer ey")
    with pytest.raises(SignInRequired):
        await world.signin.adownstream("nobody")


def test_flask_current_downstream_serves_the_signed_in_user(world: World) -> None:
    from flask import Flask

    from entra_mw.contrib.flask import EntraMW, current_downstream, login_required

    app = Flask(__name__)
    EntraMW(app, auth=world.auth, sign_in=world.signin)

    @app.get("/forecast")
    @login_required
    def forecast() -> dict[str, object]:
        answer: dict[str, object] = current_downstream.call("weather", "forecast").json()
        return answer

    @app.get("/api")
    def api() -> dict[str, object]:
        answer: dict[str, object] = current_downstream.call("weather", "api").json()
        return answer

    client = app.test_client()
    start = client.get("/auth/login?next=/forecast")
    answer = world.fake.sign_in(start.headers["Location"], username=world.s.user.upn, password=world.s.user_password)
    assert client.post("/auth/callback", data=answer).headers["Location"] == "/forecast"
    assert client.get("/forecast").json == {"path": "/forecast", "oid": world.s.user.object_id, "scp": "Weather.Read"}
    # Neither a signed-in user nor a bearer caller: the 401 a delegated API gets with no user.
    anonymous = app.test_client()
    assert anonymous.get("/api").status_code == 401


def test_starlette_downstream(world: World) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from entra_mw.contrib.starlette import SignInRoutes

    from .test_starlette_signin import client_for

    web = SignInRoutes(world.signin)

    @web.login_required
    async def forecast(request: Request) -> Response:
        downstream = await web.downstream(request)
        return JSONResponse((await downstream.acall("weather", "forecast")).json())

    app = Starlette(routes=[Route("/forecast", forecast)])
    web.install(app)
    with client_for(app) as client:
        start = client.get("/auth/login?next=/forecast")
        answer = world.fake.sign_in(
            start.headers["location"], username=world.s.user.upn, password=world.s.user_password
        )
        assert client.post("/auth/callback", data=answer).headers["location"] == "/forecast"
        assert client.get("/forecast").json()["oid"] == world.s.user.object_id
