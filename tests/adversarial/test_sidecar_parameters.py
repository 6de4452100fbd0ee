"""The sidecar's token routes take their options from the query (``optionsOverride.*``, ``AgentIdentity``,
``AgentUsername``, ``AgentUserId``): whatever a caller puts there, the answer is one of the documented statuses
(spec §1.5) — never a 500, which the sidecar keeps for its own bugs and configuration errors — and no body
carries the caller's token or the app's secret."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from entra_mw import ClientSecret, DownstreamApi, EntraAuth
from entra_mw.testing import FakeClock, FakeEntra

from ._adapters import JWT, World, make_world

pytestmark = pytest.mark.timeout(120)

# 404/405: routing; 413: a body too large; 502/504: the downstream API or Entra failed (spec §1.5).
SIDECAR_STATUSES = {200, 400, 401, 403, 404, 405, 413, 502, 503, 504}

_NAMES = [
    "optionsOverride.Scopes",
    "optionsOverride.RequestAppToken",
    "optionsOverride.AcquireTokenOptions.Tenant",
    "optionsOverride.AcquireTokenOptions.Claims",
    "optionsOverride.AcquireTokenOptions.ForceRefresh",
    "optionsOverride.AcquireTokenOptions.CorrelationId",
    "optionsOverride.AcquireTokenOptions.FmiPath",
    "optionsOverride.AcquireTokenOptions.PopPublicKey",
    "optionsOverride.BaseUrl",
    "optionsOverride.RelativePath",
    "optionsOverride.HttpMethod",
    "optionsOverride.ExtraHeaderParameters.Authorization",
    "optionsOverride.ExtraQueryParameters.q",
    "AgentIdentity",
    "AgentUsername",
    "AgentUserId",
    "access_token",
]


@pytest.fixture
def world(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[World]:
    world = make_world(fake_entra, fake_clock)
    yield world
    world.auth.close()


def _values(world: World) -> st.SearchStrategy[str]:
    s = world.scn
    interesting = [
        "",
        "true",
        "false",
        "yes",
        "organizations",
        "common",
        "consumers",
        s.tenant.tenant_id,
        "99999999-8888-7777-6666-555555555555",
        str(s.agent.app_id),
        s.agent_user.upn if hasattr(s.agent_user, "upn") else "agent@contoso",
        f"{s.api.identifier_uris[0]}/.default",
        f"{s.api.identifier_uris[0]}/Weather.Read",
        "https://graph.microsoft.com/.default openid",
        '{"access_token":{"nbf":{"essential":true,"value":"1"}}}',
        "{not json",
        "https://evil.example/",
        "//evil.example/x",
        "../../admin",
        "a\r\nX-Injected: 1",
        "\x00",
        "é" * 3,
        "\ud800",
        "x" * 5000,
    ]
    return st.one_of(st.sampled_from(interesting), st.text(max_size=12))


def _pairs(world: World) -> st.SearchStrategy[list[tuple[str, str]]]:
    names = st.sampled_from(_NAMES).flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper()]))
    return st.lists(st.tuples(names, _values(world)), max_size=4)


def test_any_options_in_the_query(world: World) -> None:
    fake, scn = world.fake, world.scn
    secret = fake.add_secret(world.server)
    fake.grant_consent(world.server, scn.api, scn.api.scopes)
    fake.grant_app_roles(world.server, scn.api, scn.api.app_roles)
    config = replace(
        world.config(),
        credentials=(ClientSecret(secret),),
        downstream_apis={
            "weather": DownstreamApi(
                base_url="https://weather.contoso.com/", scopes=(f"{scn.api.identifier_uris[0]}/Weather.Read",)
            )
        },
    )
    engine = EntraAuth(config, transport=fake.transport, async_transport=fake.async_transport, clock=fake.clock)
    from entra_mw.sidecar import SidecarOptions, create_app

    options = SidecarOptions(
        development=True,
        get_authorization_header_unauthenticated=True,
        call_downstream_api_unauthenticated=True,
    )
    token = world.user_token("Tools.Use")
    routes = [
        ("GET", "/AuthorizationHeader/weather"),
        ("GET", "/AuthorizationHeaderUnauthenticated/weather"),
        ("POST", "/DownstreamApi/weather"),
        ("GET", "/AuthorizationHeader/nosuchapi"),
    ]
    with TestClient(create_app(auth=engine, options=options), raise_server_exceptions=False) as client:

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(st.sampled_from(routes), _pairs(world))
        def check(route: tuple[str, str], pairs: list[tuple[str, str]]) -> None:
            method, path = route
            query = urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in pairs])
            reply = client.request(method, f"{path}?{query}", headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code in SIDECAR_STATUSES, (route, pairs, reply.status_code, reply.text[:300])
            body = reply.content
            assert b"Traceback" not in body
            assert secret.encode() not in body
            if reply.status_code != 200:
                assert token.encode() not in body and JWT.search(body) is None, (route, pairs, body[:300])

        check()
    engine.close()
