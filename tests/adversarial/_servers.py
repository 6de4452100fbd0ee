"""Real servers on 127.0.0.1 for what only a socket shows: uvicorn for the ASGI apps, werkzeug's WSGI server for
Flask and the WSGI middleware. Each stops when its context exits."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from .._uvicorn import uvicorn_thread
from ._adapters import ASGIApp, WSGIApp


def uvicorn_server(app: ASGIApp, *, lifespan: Literal["on", "off"] = "off") -> contextlib.AbstractContextManager[int]:
    return uvicorn_thread(app, lifespan=lifespan, ws="websockets-sansio")


@contextlib.contextmanager
def werkzeug_server(app: WSGIApp) -> Iterator[int]:
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log(self, type: str, message: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class RawReply:
    status: int | None  # None: the server closed the connection without an answer
    head: bytes
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


def raw(port: int, request: bytes, *, timeout: float = 10, head_only: bool = False) -> RawReply:
    """Send ``request`` byte for byte and read the answer until the server closes the connection (or, with
    ``head_only``, until the end of the response head: an accepted websocket stays open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if head_only and b"\r\n\r\n" in b"".join(chunks):
                break
    data = b"".join(chunks)
    if not data.startswith(b"HTTP/"):
        return RawReply(None, b"", data)
    head, _, body = data.partition(b"\r\n\r\n")
    return RawReply(int(head.split(b" ", 2)[1]), head, body)


def request(
    method: str, path: str, headers: list[bytes], *, port: int, body: bytes = b"", extra: list[bytes] | None = None
) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1".encode(),
        f"Host: 127.0.0.1:{port}".encode(),
        b"Connection: close",
        *(extra or []),
        *headers,
    ]
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
