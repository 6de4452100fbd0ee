"""Malformed HTTP over real sockets, for every adapter behind a real server (uvicorn for the ASGI apps, werkzeug
for Flask and the WSGI middleware): bytes outside ASCII, NUL, 100 ``Authorization`` headers, an enormous value,
obsolete line folding, odd schemes, ``Bearer`` with a tab, ``access_token`` in the query. Whatever the server
lets through gets the core's verdict; what the server itself refuses never reaches a 5xx; and every server
still serves a good request afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from entra_mw.testing import FakeClock, FakeEntra

from ._adapters import ADAPTERS, INITIALIZE, PATHS, Adapters, World, django_settings, make_world
from ._rules import ALLOWED
from ._servers import RawReply, raw, request, uvicorn_server, werkzeug_server

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]

# What a server may answer itself for a request it will not parse (h11 and http.server refuse oversized or
# malformed header sections with 400 or 431 before any application code runs).
SERVER_REFUSALS = {400, 431}


@pytest.fixture
def world(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[World]:
    world = make_world(fake_entra, fake_clock)
    yield world
    world.auth.close()


@pytest.fixture
def ports(world: World) -> Iterator[dict[str, int]]:
    adapters = Adapters(world)
    with contextlib.ExitStack() as stack:
        stack.enter_context(django_settings(world))
        out = {name: stack.enter_context(uvicorn_server(app)) for name, app in adapters.asgi.items() if name != "mcp"}
        # The MCP app's lifespan runs the SDK's session manager.
        out["mcp"] = stack.enter_context(uvicorn_server(adapters.asgi["mcp"], lifespan="on"))
        for name, wsgi in adapters.wsgi.items():
            out[name] = stack.enter_context(werkzeug_server(wsgi))
        yield out


def send(adapter: str, port: int, headers: list[bytes], query: bytes = b"") -> RawReply:
    path = PATHS[adapter] + ("?" + query.decode("latin-1") if query else "")
    if adapter == "mcp":
        extra = [b"Accept: application/json, text/event-stream", b"Content-Type: application/json"]
        return raw(port, request("POST", path, headers, port=port, body=INITIALIZE, extra=extra))
    return raw(port, request("GET", path, headers, port=port))


def _cases(token: bytes) -> list[tuple[str, list[bytes], bytes, set[int] | int | None]]:
    """(name, header lines, query, the verdict(s) allowed — None: any refusal)."""
    good = b"Authorization: Bearer " + token
    return [
        ("good", [good], b"", 200),
        ("lower-case name", [b"authorization: Bearer " + token], b"", 200),
        ("upper-case name", [b"AUTHORIZATION: Bearer " + token], b"", 200),
        ("no header", [], b"", 401),
        ("UTF-8 bytes in the token", [b"Authorization: Bearer " + "ťøķęñ".encode()], b"", 400),
        ("latin-1 bytes after the token", [good + b"\xe9\xff"], b"", 400),
        ("NUL in the value", [good + b"\x00"], b"", None),
        ("DEL in the value", [good + b"\x7f"], b"", None),
        # http.server (under werkzeug) takes at most 100 header lines and refuses more with 431 itself.
        ("100 Authorization headers", [good] * 100, b"", {400, 431}),
        ("two Authorization headers", [good, good], b"", 400),
        ("folded by the client", [good + b", Bearer " + token], b"", 400),
        ("enormous value", [b"Authorization: Bearer " + b"A" * 100_000], b"", None),
        ("long but under server limits", [b"Authorization: Bearer " + b"A" * 12_000], b"", 401),
        # RFC 9112 §5.2: a server rejects obs-fold (400) or replaces it with a space, making a good header.
        ("obsolete line folding", [b"Authorization: Bearer", b" " + token], b"", {200, 400}),
        ("space before the colon", [b"Authorization : Bearer " + token], b"", None),
        ("Bearer with a tab", [b"Authorization: Bearer\t" + token], b"", 401),
        ("Bearer alone", [b"Authorization: Bearer"], b"", 400),
        ("Basic", [b"Authorization: Basic dXNlcjpwYXNz"], b"", 401),
        ("Negotiate", [b"Authorization: Negotiate " + token], b"", 401),
        ("lower-case bearer", [b"Authorization: bearer " + token], b"", 200),
        ("token in the query only", [], b"access_token=" + token, 400),
        ("token in the query and header", [good], b"access_token=" + token, 400),
        ("escaped name in the query", [good], b"access%5Ftoken=x", 400),
        ("escaped letter in the query", [good], b"%61ccess_token=x", 400),
        ("query name with no value", [good], b"x=1&access_token", 400),
    ]


def test_malformed_http_over_sockets(world: World, ports: dict[str, int]) -> None:
    token = world.user_token("Tools.Use").encode()
    problems: list[str] = []
    for name, headers, query, expected in _cases(token):
        for adapter in ADAPTERS:
            reply = send(adapter, ports[adapter], headers, query)
            if reply.status is None:
                problems.append(f"{adapter}: {name}: connection closed with no answer")
                continue
            # The sidecar's /Validate answers a good token with that token (spec §1.2).
            echoes = adapter == "sidecar" and reply.status == 200
            if b"Traceback" in reply.body or (token in reply.body and not echoes):
                problems.append(f"{adapter}: {name}: body leaks {reply.body[:80]!r}")
            if expected is None:
                if reply.status not in ALLOWED - {200} and reply.status not in SERVER_REFUSALS:
                    problems.append(f"{adapter}: {name}: {reply.status}")
            elif isinstance(expected, set):
                if reply.status not in expected:
                    problems.append(f"{adapter}: {name}: {reply.status} (expected one of {sorted(expected)})")
            elif reply.status != expected:
                problems.append(f"{adapter}: {name}: {reply.status} (expected {expected})")
            elif expected in (401, 403) and not (reply.header("WWW-Authenticate") or "").lower().startswith("bearer"):
                problems.append(f"{adapter}: {name}: {expected} without a Bearer challenge")
    for adapter in ADAPTERS:
        after = send(adapter, ports[adapter], [b"Authorization: Bearer " + token])
        if after.status != 200:
            problems.append(f"{adapter}: a good request afterwards got {after.status}")
    assert not problems, "\n".join(problems)
