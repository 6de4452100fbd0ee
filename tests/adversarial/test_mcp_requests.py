"""The MCP server behind ``ScopeChallengeMiddleware``: the SDK reads the ``Authorization`` header its own way
(the first of several, ``Bearer`` plus exactly one space, the query ignored), so the middleware must give the
core's verdict on how the token was sent before the SDK sees the request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from entra_mw.testing import FakeClock, FakeEntra

from ._adapters import RESOURCE, Adapters, World, make_world
from ._rules import check_reply

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def world(fake_entra: FakeEntra, fake_clock: FakeClock) -> AsyncIterator[World]:
    world = make_world(fake_entra, fake_clock)
    yield world
    await world.auth.aclose()


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        pytest.param(2, b"", id="two-headers"),
        pytest.param(1, b"access_token=x", id="query-token"),
        pytest.param(1, b"%61ccess_token=x", id="escaped-query-token"),
    ],
)
async def test_a_second_credential_beside_a_good_token_is_400(world: World, headers: int, query: bytes) -> None:
    good = b"Bearer " + world.user_token("Tools.Use").encode()
    adapters = Adapters(world)
    async with adapters.running():
        reply = await adapters.send("mcp", [(b"authorization", good)] * headers, query)
    check_reply("mcp", reply)
    assert reply.status == 400
    challenge = reply.header("WWW-Authenticate") or ""
    assert 'error="invalid_request"' in challenge
    assert 'resource_metadata="https://mcp.contoso.com/.well-known/oauth-protected-resource/mcp"' in challenge


@pytest.mark.parametrize("value", [b"Bearer", b"Bearer ", b'Bearer "abc"', b"Bearer a, Bearer b"])
async def test_malformed_bearer_is_400(world: World, value: bytes) -> None:
    adapters = Adapters(world)
    async with adapters.running():
        reply = await adapters.send("mcp", [(b"authorization", value)])
    check_reply("mcp", reply)
    assert reply.status == 400


@pytest.mark.parametrize("value", [b"Bearer  {t}", b"Bearer {t} ", b" Bearer {t}", b"BEARER {t}"])
async def test_spacing_the_rfc_allows_is_read_as_the_core_reads_it(world: World, value: bytes) -> None:
    token = world.user_token("Tools.Use").encode()
    adapters = Adapters(world)
    async with adapters.running():
        reply = await adapters.send("mcp", [(b"authorization", value.replace(b"{t}", token))])
    assert reply.status == 200, reply.body


async def test_metadata_is_served_whatever_the_authorization(world: World) -> None:
    from ._adapters import call_asgi

    adapters = Adapters(world)
    path = "/.well-known/oauth-protected-resource/mcp"
    async with adapters.running():
        reply = await call_asgi(adapters.asgi["mcp"], path, [(b"authorization", b"Bearer a, Bearer b")])
    assert reply.status == 200
    assert RESOURCE.encode() in reply.body
