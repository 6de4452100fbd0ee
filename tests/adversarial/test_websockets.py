"""Refused websocket handshakes, for the ASGI middleware and a FastAPI websocket route with ``require``: the
denial response (401/403 with the challenge) when the server offers ``websocket.http.response``, else close code
1008 before anything is accepted — never 1000, never an accepted socket, never a 500. Over uvicorn and in
process with and without the extension."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from typing import Any

import pytest

from entra_mw.testing import FakeClock, FakeEntra

from ._adapters import Message, Scope, World, asgi_app, fastapi_app, make_world
from ._servers import raw, uvicorn_server


@pytest.fixture
def world(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[World]:
    world = make_world(fake_entra, fake_clock)
    yield world
    world.auth.close()


def _tokens(world: World) -> dict[str, tuple[bytes | None, int]]:
    """name -> (Authorization value, the verdict)."""
    good = world.user_token("Tools.Use").encode()
    head, payload, sig = good.split(b".")
    return {
        "good": (b"Bearer " + good, 200),
        "none": (None, 401),
        "bad signature": (b"Bearer " + head + b"." + payload + b"." + sig[::-1], 401),
        "lacks the scope": (b"Bearer " + world.fake.sign({**world.claims(), "scp": "Other.Read"}).encode(), 403),
        "malformed": (b"Bearer a b", 400),
    }


APPS = {"asgi": asgi_app, "fastapi": fastapi_app}


@pytest.mark.loopback
@pytest.mark.timeout(60)
@pytest.mark.parametrize("adapter", sorted(APPS))
def test_handshakes_over_uvicorn(world: World, adapter: str) -> None:
    with uvicorn_server(APPS[adapter](world.auth)) as port:
        for name, (value, verdict) in _tokens(world).items():
            key = base64.b64encode(os.urandom(16))
            lines = [
                b"GET /ws HTTP/1.1",
                f"Host: 127.0.0.1:{port}".encode(),
                b"Upgrade: websocket",
                b"Connection: Upgrade",
                b"Sec-WebSocket-Key: " + key,
                b"Sec-WebSocket-Version: 13",
            ]
            if value is not None:
                lines.append(b"Authorization: " + value)
            reply = raw(port, b"\r\n".join(lines) + b"\r\n\r\n", timeout=5, head_only=verdict == 200)
            if verdict == 200:
                assert reply.status == 101, (name, reply.status, reply.body[:200])
                continue
            assert reply.status == verdict, (adapter, name, reply.status, reply.body[:200])
            challenge = reply.header("WWW-Authenticate") or ""
            if verdict in (401, 403):
                assert challenge.lower().startswith("bearer"), (adapter, name, reply.head)
            assert b"Traceback" not in reply.body


async def _handshake(app: Any, value: bytes | None, *, extension: bool) -> list[Message]:
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")] + ([(b"authorization", value)] if value is not None else []),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if extension else {},
    }
    incoming: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


@pytest.mark.parametrize("extension", [True, False], ids=["denial-response", "close-only"])
@pytest.mark.parametrize("adapter", sorted(APPS))
def test_handshakes_in_process(world: World, adapter: str, extension: bool) -> None:
    app = APPS[adapter](world.auth)
    for name, (value, verdict) in _tokens(world).items():
        sent = asyncio.run(_handshake(app, value, extension=extension))
        kinds = [m["type"] for m in sent]
        if verdict == 200:
            assert kinds[0] == "websocket.accept", (adapter, name, kinds)
            continue
        assert "websocket.accept" not in kinds, (adapter, name, kinds)
        if extension:
            assert kinds[0] == "websocket.http.response.start", (adapter, name, kinds)
            assert sent[0]["status"] == verdict, (adapter, name, sent[0])
        else:
            assert kinds == ["websocket.close"], (adapter, name, kinds)
            assert sent[0]["code"] == 1008, (adapter, name, sent[0])
