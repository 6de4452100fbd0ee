"""The MCP server behind ``ScopeChallengeMiddleware``: the SDK reads the ``Authorization`` header its own way
(the first of several, ``Bearer`` plus exactly one space, the query ignored), so the middleware must give the
core's verdict on how the token was sent before the SDK sees the request."""

from __future__ import annotations

import pytest

from ._adapters import RESOURCE, Adapters, ASGIApp, Receive, Scope, Send, World, call_asgi
from ._rules import check_reply

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


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
    adapters = Adapters(world)
    path = "/.well-known/oauth-protected-resource/mcp"
    async with adapters.running():
        reply = await call_asgi(adapters.asgi["mcp"], path, [(b"authorization", b"Bearer a, Bearer b")])
    assert reply.status == 200
    assert RESOURCE.encode() in reply.body


def _guarded(world: World) -> ASGIApp:
    """The MCP app with a tool that needs a scope the token lacks (so ScopeChallengeMiddleware reads bodies)."""
    from entra_mw.contrib.mcp import EntraTokenVerifier, ScopeChallengeMiddleware, auth_settings, require

    settings = auth_settings(world.auth, resource_server_url=RESOURCE, scopes=["Tools.Use"])
    verifier = EntraTokenVerifier(world.auth, resource=RESOURCE)

    @require(scopes=["Forecast.Read"])
    async def forecast() -> str:
        return "sunny"

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})

    return ScopeChallengeMiddleware(inner, settings=settings, verifier=verifier, tools=[forecast])


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-array"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deep-object"),
        pytest.param(b'{"method":"tools/call","params":{"name":"forecast"},"x":' + b"[" * 60_000, id="deep-tail"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b'{"method":"tools/call","params":{"name":"whoami"},"id":1e999999}', id="huge-number"),
        pytest.param(b'{"method":"tools/call","params":{"name":"' + b"\\ud800" + b'"}}', id="lone-surrogate"),
        pytest.param(b'[{"method":"tools/call","params":[]}, 1, null]', id="odd-batch"),
    ],
)
async def test_any_json_rpc_body_is_read_safely(world: World, body: bytes) -> None:
    token = world.user_token("Tools.Use").encode()
    app = _guarded(world)
    reply = await call_asgi(app, "/mcp", [(b"authorization", b"Bearer " + token)], method="POST", body=body)
    check_reply("mcp", reply)
    assert reply.status == 200  # not a tools/call of a guarded tool: the SDK answers it


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-array"),
        pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + b"[" * 60_000, id="deep-tail"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_the_sdk_behind_the_middleware_refuses_junk_bodies_cleanly(world: World, body: bytes) -> None:
    token = world.user_token("Tools.Use").encode()
    adapters = Adapters(world)
    headers = [
        (b"authorization", b"Bearer " + token),
        (b"accept", b"application/json, text/event-stream"),
        (b"content-type", b"application/json"),
    ]
    async with adapters.running():
        reply = await call_asgi(adapters.asgi["mcp"], "/mcp", headers, method="POST", body=body)
    assert 400 <= reply.status < 500, (reply.status, reply.body[:200])
    assert b"Traceback" not in reply.body
