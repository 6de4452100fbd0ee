"""EntraWSGIMiddleware behind a real ``wsgiref`` server on 127.0.0.1: duplicate headers are folded by the server
into one comma-separated ``HTTP_AUTHORIZATION``, which the middleware must refuse."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from entra_mw import AuthContext
from entra_mw.testing import FakeEntra
from entra_mw.wsgi import EntraWSGIMiddleware

from ..asgi._support import Env, fake_env

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(60)]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    ctx: AuthContext = environ["entra_mw"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(ctx.principal.oid if ctx.principal else None).encode()]


@pytest.fixture
def env(fake_entra: FakeEntra) -> Iterator[Env]:
    env = fake_env(fake_entra)
    yield env
    env.auth.close()


@pytest.fixture
def port(env: Env) -> Iterator[int]:
    mw = EntraWSGIMiddleware(app, auth=env.auth)
    server: WSGIServer = make_server("127.0.0.1", 0, mw, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def raw_request(port: int, *headers: bytes, path: bytes = b"/") -> tuple[int, bytes]:
    lines = [b"GET " + path + b" HTTP/1.0", b"Host: 127.0.0.1", *headers]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    return int(data.split(b"\r\n", 1)[0].split()[1]), data


def test_valid_missing_and_duplicate(env: Env, port: int) -> None:
    good = b"Authorization: Bearer " + env.token.encode()
    status, data = raw_request(port, good)
    assert status == 200
    assert data.endswith(env.oid.encode())
    status, data = raw_request(port)
    assert status == 401
    assert b"WWW-Authenticate: Bearer\r\n" in data
    status, data = raw_request(port, good, good)
    assert status == 400
    assert b'error="invalid_request"' in data
    status, _ = raw_request(port, b"Authorization: Basic dXNlcg==", good)
    assert status == 400


def test_junk_and_large_headers(env: Env, port: int) -> None:
    good = b"Authorization: Bearer " + env.token.encode()
    assert raw_request(port, b"Authorization: Bearer \xff\xfe")[0] == 400
    assert raw_request(port, b"Authorization: Bearer " + b"a" * 20_000)[0] == 401
    assert raw_request(port, good, path=b"/?access_token=x")[0] == 400
    assert raw_request(port, good)[0] == 200
