"""What one caller's request must never leave behind for another, end to end against FakeEntra: cookies in the
shared HTTP clients, OBO tokens outliving (or serving another user than) the caller's token, and a Retry-After
forgotten after the first refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from entra_mw import (
    ClientSecret,
    DownstreamApi,
    EntraAuth,
    EntraConfig,
    Principal,
    TokenAcquisitionError,
)
from entra_mw._downstream import DownstreamRequestError
from entra_mw.testing import FakeClock, FakeEntra, Scenario

from ._routing import RoutingTransport

HOST_A = "a.shared.example"
HOST_B = "b.shared.example"


@dataclass
class CookieApi:
    """A downstream API that hands every caller a session cookie for the whole parent domain, and records the
    ``Cookie`` header of each request it gets."""

    fake: FakeEntra
    cookies_seen: list[str | None] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.cookies_seen.append(request.headers.get("cookie"))
        oid = self.fake.decode(request.headers["authorization"].removeprefix("Bearer ")).get("oid", "app")
        return httpx2.Response(
            200,
            json={"oid": oid},
            headers={"Set-Cookie": f"session={oid}; Domain=shared.example; Path=/"},
        )


class CookieSettingEntra(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """FakeEntra behind a proxy that sets a cookie on every answer; records the ``Cookie`` header of each
    token request."""

    def __init__(self, fake: FakeEntra) -> None:
        self.fake = fake
        self.cookies_seen: list[str | None] = []

    def _tag(self, request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        if request.method == "POST":
            self.cookies_seen.append(request.headers.get("cookie"))
        response.headers["Set-Cookie"] = "esctx=abc; Path=/"
        return response

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self._tag(request, self.fake.transport.handle_request(request))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return self._tag(request, await self.fake.async_transport.handle_async_request(request))


@dataclass
class World:
    fake: FakeEntra
    scn: Scenario
    auth: EntraAuth
    api_a: CookieApi
    api_b: CookieApi
    entra: CookieSettingEntra

    def caller(self, user: Any = None, **kw: Any) -> tuple[Principal, str]:
        token = self.fake.user_token(
            user or self.scn.user, client=self.scn.client, resource=self.scn.blueprint, scopes=["access_agent"], **kw
        )
        return self.auth.validate(token), token


@pytest.fixture
def world(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[World]:
    scn = fake_entra.quickstart()
    scope = f"{scn.api.identifier_uris[0]}/Weather.Read"
    api_a, api_b = CookieApi(fake_entra), CookieApi(fake_entra)
    entra = CookieSettingEntra(fake_entra)
    transport = RoutingTransport({HOST_A: api_a, HOST_B: api_b}, fallback=entra, afallback=entra)
    config = EntraConfig(
        tenant_id=scn.tenant.tenant_id,
        client_id=scn.blueprint.app_id,
        credentials=(ClientSecret(scn.blueprint_secret),),
        downstream_apis={
            "a": DownstreamApi(base_url=f"https://{HOST_A}/", scopes=(scope,)),
            "b": DownstreamApi(base_url=f"https://{HOST_B}/", scopes=(scope,)),
        },
    )
    auth = EntraAuth(config, transport=transport, async_transport=transport, clock=fake_clock)
    try:
        yield World(fake=fake_entra, scn=scn, auth=auth, api_a=api_a, api_b=api_b, entra=entra)
    finally:
        auth.close()


# -- cookies ----------------------------------------------------------------------------------------


def second_user(world: World) -> Any:
    return world.fake.add_user(world.scn.tenant)


def test_cookies_never_travel_between_users_apis_or_to_the_token_endpoint(world: World) -> None:
    alice, bob = world.caller(), world.caller(second_user(world))
    assert world.auth.downstream(*alice).call("a").json()["oid"] == world.scn.user.object_id
    assert world.auth.downstream(*bob).call("a").status_code == 200
    assert world.auth.downstream(*bob).call("b").status_code == 200
    assert world.auth.downstream(*alice).call("b").status_code == 200
    assert world.api_a.cookies_seen == [None, None]
    assert world.api_b.cookies_seen == [None, None]
    assert len(world.entra.cookies_seen) >= 2 and set(world.entra.cookies_seen) == {None}


@pytest.mark.anyio
async def test_async_cookies_never_travel_between_users_apis_or_to_the_token_endpoint(world: World) -> None:
    alice, bob = world.caller(), world.caller(second_user(world))
    assert (await world.auth.downstream(*alice).acall("a")).status_code == 200
    assert (await world.auth.downstream(*bob).acall("a")).status_code == 200
    assert (await world.auth.downstream(*bob).acall("b")).status_code == 200
    assert (await world.auth.downstream(*alice).acall("b")).status_code == 200
    assert world.api_a.cookies_seen == [None, None]
    assert world.api_b.cookies_seen == [None, None]
    assert len(world.entra.cookies_seen) >= 2 and set(world.entra.cookies_seen) == {None}


def test_the_pooled_clients_keep_no_cookies(world: World) -> None:
    world.auth.downstream(*world.caller()).call("a")
    assert len(world.auth._http.client.cookies) == 0


# -- OBO tokens bound to the caller's token ------------------------------------------------------------


def test_obo_token_is_not_served_past_the_callers_exp_plus_skew(world: World, fake_clock: FakeClock) -> None:
    # A 20-minute caller token; the OBO token Entra gives lives 60-90 minutes.
    principal, tc = world.caller(lifetime=1200)
    header = world.auth.downstream(principal, tc).authorization_header("a")
    assert world.auth.downstream(principal, tc).authorization_header("a") == header
    fake_clock.advance(1200 + 299)  # inside the validator's skew: still this caller's token
    assert world.auth.downstream(principal, tc).authorization_header("a") == header
    requests = world.fake.request_count("token")
    fake_clock.advance(1)  # exp + skew: the OBO entry is gone, and the expired caller is refused locally
    with pytest.raises(TokenAcquisitionError) as info:
        world.auth.downstream(principal, tc).authorization_header("a")
    assert info.value.status_code == 401
    assert info.value.www_authenticate is not None and 'error="invalid_token"' in info.value.www_authenticate
    assert world.fake.request_count("token") == requests


def test_expired_caller_token_is_refused_before_any_exchange(world: World, fake_clock: FakeClock) -> None:
    principal, tc = world.caller(lifetime=600)
    fake_clock.advance(600)
    with pytest.raises(TokenAcquisitionError) as info:
        world.auth.downstream(principal, tc).call("a")
    assert info.value.status_code == 401
    assert world.fake.request_count("token") == 0
    assert world.api_a.cookies_seen == []


@pytest.mark.parametrize("cached", [False, True])
def test_a_principal_of_another_token_is_refused(world: World, cached: bool) -> None:
    alice_principal, alice_token = world.caller()
    bob_principal, _ = world.caller(second_user(world))
    older_alice, _ = world.caller()  # the same user, another token
    if cached:
        world.auth.downstream(alice_principal, alice_token).authorization_header("a")
    requests = world.fake.request_count("token")
    # Another user's principal is refused always; another token's principal of the same user whenever the
    # token must be asked for (a hit serves only what the caller's own token stands for).
    for principal in (bob_principal,) if cached else (bob_principal, older_alice):
        with pytest.raises(DownstreamRequestError) as info:
            world.auth.downstream(principal, alice_token).authorization_header("a")
        assert info.value.status_code == 400
        assert info.value.reason == "principal_mismatch"
    with pytest.raises(DownstreamRequestError):
        world.auth.downstream(bob_principal, alice_token).call("b")
    assert world.fake.request_count("token") == requests
    assert world.api_b.cookies_seen == []


@pytest.mark.anyio
async def test_async_principal_of_another_token_is_refused(world: World) -> None:
    alice_principal, alice_token = world.caller()
    bob_principal, _ = world.caller(second_user(world))
    await world.auth.downstream(alice_principal, alice_token).aauthorization_header("a")
    with pytest.raises(DownstreamRequestError):
        await world.auth.downstream(bob_principal, alice_token).aauthorization_header("a")


# -- Retry-After is remembered ------------------------------------------------------------------------


def test_retry_after_is_remembered_and_fails_fast(world: World, fake_clock: FakeClock) -> None:
    principal, tc = world.caller()
    world.fake.faults.rate_limit("token", retry_after=60, times=1)
    with pytest.raises(TokenAcquisitionError) as info:
        world.auth.downstream(principal, tc).authorization_header("a")
    assert info.value.status_code == 503
    assert world.fake.request_count("token") == 1  # 60 s is beyond the retry budget: not retried
    fake_clock.advance(20)
    for _ in range(5):
        with pytest.raises(TokenAcquisitionError) as info:
            world.auth.downstream(principal, tc).authorization_header("a")
        assert info.value.status_code == 503
        assert info.value.retry_after == 40
        assert ("Retry-After", "40") in info.value.headers()
    assert world.fake.request_count("token") == 1  # no new attempt inside the window
    fake_clock.advance(40)
    assert world.auth.downstream(principal, tc).authorization_header("a").startswith("Bearer ")
    assert world.fake.request_count("token") == 2


def test_retry_after_for_client_credentials_is_per_app(world: World, fake_clock: FakeClock) -> None:
    resource = world.scn.api.identifier_uris[0]
    root = world.auth.downstream()
    world.fake.faults.rate_limit("token", retry_after=60, times=1)
    with pytest.raises(TokenAcquisitionError):
        root.authorization_header("x", scopes=[f"{resource}/.default"], app=True)
    # Another resource for the same app: the app is throttled, not the scope set.
    with pytest.raises(TokenAcquisitionError) as info:
        root.authorization_header("y", scopes=["https://graph.microsoft.com/.default"], app=True)
    assert info.value.status_code == 503
    assert world.fake.request_count("token") == 1
    fake_clock.advance(61)
    assert root.authorization_header("x", scopes=[f"{resource}/.default"], app=True).startswith("Bearer ")


def test_retry_after_of_one_caller_does_not_block_another(world: World) -> None:
    alice, bob = world.caller(), world.caller(second_user(world))
    world.fake.faults.rate_limit("token", retry_after=60, times=1)
    with pytest.raises(TokenAcquisitionError):
        world.auth.downstream(*alice).authorization_header("a")
    assert world.auth.downstream(*bob).authorization_header("a").startswith("Bearer ")


def test_serve_stale_inside_the_margin_while_entra_throttles(world: World, fake_clock: FakeClock) -> None:
    root = world.auth.downstream()
    scopes = [f"{world.scn.api.identifier_uris[0]}/.default"]
    header = root.authorization_header("x", scopes=scopes, app=True)
    token = json.loads(json.dumps(world.fake.decode(header.removeprefix("Bearer "))))
    fake_clock.advance(token["exp"] - fake_clock.time() - 120)  # 2 minutes before exp: refresh due
    world.fake.faults.rate_limit("token", retry_after=600)
    assert root.authorization_header("x", scopes=scopes, app=True) == header
    assert root.authorization_header("x", scopes=scopes, app=True) == header
    fake_clock.advance(120)  # exp: never served
    with pytest.raises(TokenAcquisitionError) as info:
        root.authorization_header("x", scopes=scopes, app=True)
    assert info.value.status_code == 503
