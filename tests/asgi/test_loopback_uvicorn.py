"""EntraMiddleware behind a real uvicorn on 127.0.0.1: what only a socket shows (duplicate and huge headers, the
websocket handshake)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from entra_mw import AuthContext, EntraAuth
from entra_mw.asgi import EntraMiddleware
from entra_mw.testing import FakeEntra

from ._support import Env, fake_env

uvicorn = pytest.importorskip("uvicorn")

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(60)]


@pytest.fixture
def env(fake_entra: FakeEntra) -> Iterator[Env]:
    env = fake_env(fake_entra)
    yield env
    env.auth.close()


def build_app(auth: EntraAuth) -> Starlette:
    async def me(request: Request) -> JSONResponse:
        ctx: AuthContext = request.scope["entra_mw"]
        return JSONResponse({"oid": ctx.principal.oid if ctx.principal else None})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        ctx: AuthContext = websocket.scope["entra_mw"]
        await websocket.send_text(str(ctx.principal.oid if ctx.principal else None))
        await websocket.close()

    app = Starlette(routes=[Route("/me", me), WebSocketRoute("/ws", ws)])
    app.add_middleware(EntraMiddleware, auth=auth)
    return app


class ServerThread:
    """uvicorn on an ephemeral loopback port, in a thread; ``stop`` ends it."""

    def __init__(self, app: Any, **options: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="critical", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> int:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            self.thread.join(0.01)
        else:
            raise RuntimeError("uvicorn did not start")
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def port(env: Env) -> Iterator[int]:
    server = ServerThread(build_app(env.auth), ws="websockets-sansio" if _has_websockets() else "none")
    try:
        yield server.start()
    finally:
        server.stop()


def _has_websockets() -> bool:
    try:
        import websockets  # noqa: F401
    except ImportError:
        return False
    return True


def raw_request(port: int, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as-is and return the status code and the raw response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    status_line = data.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), data


def get(path: str, *headers: bytes) -> bytes:
    lines = [b"GET " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_valid_and_missing(env: Env, port: int) -> None:
    status, data = raw_request(port, get("/me", b"Authorization: Bearer " + env.token.encode()))
    assert status == 200
    status, data = raw_request(port, get("/me"))
    assert status == 401
    assert b"www-authenticate: bearer\r\n" in data.lower()


def test_duplicate_authorization_headers_over_the_wire(env: Env, port: int) -> None:
    auth = b"Authorization: Bearer " + env.token.encode()
    status, data = raw_request(port, get("/me", auth, auth))
    assert status == 400
    assert b'error="invalid_request"' in data
    status, _ = raw_request(port, get("/me", b"Authorization: Basic dXNlcg==", auth))
    assert status == 400


def test_huge_and_junk_headers(env: Env, port: int) -> None:
    # Large but within the server's limits: our answer (the validator refuses it).
    status, _ = raw_request(port, get("/me", b"Authorization: Bearer " + b"a" * 12_000))
    assert status == 401
    # Past the server's limit: the server itself refuses; never a 500, and the server lives on.
    status, _ = raw_request(port, get("/me", b"Authorization: Bearer " + b"a" * 200_000))
    assert 400 <= status < 500
    status, _ = raw_request(port, get("/me", b"Authorization: Bearer \xff\xfe\x80"))
    assert status == 400
    status, _ = raw_request(port, get("/me?access_token=abc", b"Authorization: Bearer " + env.token.encode()))
    assert status == 400
    status, _ = raw_request(port, get("/me", b"Authorization: Bearer " + env.token.encode()))
    assert status == 200


def test_websocket_denial_and_success(env: Env, port: int) -> None:
    pytest.importorskip("websockets")
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as info:
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10):
            pass
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"

    with pytest.raises(InvalidStatus) as info:
        with connect(
            f"ws://127.0.0.1:{port}/ws", additional_headers={"Authorization": f"Bearer {env.bad}"}, open_timeout=10
        ):
            pass
    assert info.value.response.status_code == 401
    assert b"invalid_token" in info.value.response.body

    with connect(
        f"ws://127.0.0.1:{port}/ws", additional_headers={"Authorization": f"Bearer {env.token}"}, open_timeout=10
    ) as ws:
        assert ws.recv(timeout=10) == env.oid


def test_websocket_denial_raw_handshake(env: Env, port: int) -> None:
    if not _has_websockets():
        pytest.skip("uvicorn serves websockets only with the websockets or wsproto package")
    request = get(
        "/ws",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    ).replace(b"Connection: close\r\n", b"")
    status, data = raw_request(port, request)
    assert status == 401
    assert b"101" not in data.split(b"\r\n", 1)[0]
