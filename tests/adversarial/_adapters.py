"""Every integration's public surface around one engine, and one way to send any request through each of them.

The apps are built the way DESIGN §4 tells users to build them (ASGI/WSGI middleware, FastAPI ``setup`` +
``require``, Flask ``EntraMW`` + ``@require``, MCP ``EntraTokenVerifier`` + ``auth_settings`` +
``ScopeChallengeMiddleware``, the sidecar's ``create_app``); each protected route needs the scope ``Tools.Use`` (or
the app role ``Tools.All``), so the same token must get the same verdict everywhere. ``Reply`` is what a client
saw; ``send`` drives an app in process with raw header bytes (duplicates included), as a server would hand them
over.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import anyio
from fastapi import WebSocket  # at module level: FastAPI resolves the route's annotations in these globals

from entra_mw import EntraAuth, EntraConfig, EntraError, Requirement
from entra_mw.testing import App, FakeClock, FakeEntra, Scenario

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
Headers = Sequence[tuple[bytes, bytes]]

RESOURCE = "https://mcp.contoso.com/mcp"
SCOPE = "Tools.Use"
ROLE = "Tools.All"
REQUIREMENT = Requirement(scopes=(SCOPE,), roles=(ROLE,))

ASGI_ADAPTERS = ("asgi", "fastapi", "mcp", "sidecar", "django-asgi")
WSGI_ADAPTERS = ("wsgi", "flask", "django", "drf")
ADAPTERS = (*ASGI_ADAPTERS, *WSGI_ADAPTERS)

#: The path each adapter protects.
PATHS = {
    "asgi": "/me",
    "fastapi": "/me",
    "mcp": "/mcp",
    "sidecar": "/Validate",
    "django-asgi": "/me",
    "wsgi": "/me",
    "flask": "/me",
    "django": "/me",
    "drf": "/drf/me",
}

INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
).encode()

JWT = re.compile(rb"eyJ[\w-]{4,}\.[\w-]{4,}")


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class World:
    """FakeEntra's quickstart tenant plus ``server`` (App ID URI ``RESOURCE``, scope ``Tools.Use``, role
    ``Tools.All``), one engine for it, and a token factory."""

    fake: FakeEntra
    scn: Scenario
    server: App
    auth: EntraAuth

    def config(self) -> EntraConfig:
        return self.auth.config

    def user_token(self, *scopes: str, **kw: Any) -> str:
        return self.fake.user_token(
            self.scn.user, client=self.scn.client, resource=self.server, scopes=list(scopes) or None, **kw
        )

    def app_token(self, *roles: str, **kw: Any) -> str:
        return self.fake.app_token(self.scn.client, resource=self.server, roles=list(roles), **kw)

    def claims(self) -> dict[str, Any]:
        """A valid user token's claims (scope ``Tools.Use``), to tamper with and sign again."""
        return self.fake.decode(self.user_token(SCOPE))

    def verdict(self, authorization: Any, query: bytes | str | None = None) -> int:
        """The status the core gives this request: 200 when it passes ``REQUIREMENT``, else the error's."""
        try:
            self.auth.authenticate(authorization, query=query, requirement=REQUIREMENT)
        except EntraError as exc:
            return exc.status_code
        return 200


def make_world(fake: FakeEntra, clock: FakeClock, **overrides: Any) -> World:
    scn = fake.quickstart()
    server = fake.add_app(
        scn.tenant, display_name="contoso-mcp", identifier_uris=[RESOURCE], scopes=(SCOPE,), app_roles=(ROLE,)
    )
    fake.grant_consent(scn.client, server, server.scopes)
    fake.grant_app_roles(scn.client, server, [ROLE])
    options: dict[str, Any] = {
        "tenant_id": scn.tenant.tenant_id,
        "client_id": server.app_id,
        "audiences": (RESOURCE,),
    }
    options.update(overrides)
    auth = EntraAuth(
        EntraConfig(**options), transport=fake.transport, async_transport=fake.async_transport, clock=clock
    )
    return World(fake=fake, scn=scn, server=server, auth=auth)


# -- the apps -----------------------------------------------------------------------------------------------


async def _ok(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "ok"})
        await send({"type": "websocket.close", "code": 1000})


def asgi_app(auth: EntraAuth) -> ASGIApp:
    from entra_mw.asgi import EntraMiddleware

    return EntraMiddleware(_ok, auth=auth, requirement=REQUIREMENT)


def fastapi_app(auth: EntraAuth) -> ASGIApp:
    from fastapi import Depends, FastAPI

    from entra_mw.contrib.fastapi import require, setup

    app = FastAPI()
    setup(app, auth)
    needs = [Depends(require(scopes=[SCOPE], roles=[ROLE]))]

    @app.get("/me", dependencies=needs)
    async def me() -> dict[str, str]:
        return {"ok": "yes"}

    @app.websocket("/ws", dependencies=needs)
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("ok")
        await websocket.close()

    return app


def mcp_app(auth: EntraAuth) -> tuple[ASGIApp, Callable[[], contextlib.AbstractAsyncContextManager[None]]]:
    """The MCP server's app and the context that runs its session manager (what its lifespan would do)."""
    from mcp.server.mcpserver import MCPServer

    from entra_mw.contrib.mcp import EntraTokenVerifier, ScopeChallengeMiddleware, auth_settings

    settings = auth_settings(auth, resource_server_url=RESOURCE, scopes=[SCOPE])
    verifier = EntraTokenVerifier(auth, resource=RESOURCE)
    server = MCPServer("adversarial", token_verifier=verifier, auth=settings, log_level="WARNING")

    @server.tool()
    async def whoami() -> str:
        return "ok"

    inner = server.streamable_http_app(streamable_http_path="/mcp", json_response=True, stateless_http=True)
    app = ScopeChallengeMiddleware(inner, settings=settings)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    return app, running


def sidecar_app(world: World) -> ASGIApp:
    from entra_mw.sidecar import SidecarOptions, create_app

    # The sidecar checks AzureAd:Scopes itself (spec §1.7); app-only tokens pass /Validate on roles alone there,
    # so its engine gets the same requirement through the config it reads.
    engine = EntraAuth(
        replace(world.config(), validate_scopes=SCOPE),
        transport=world.fake.transport,
        async_transport=world.fake.async_transport,
        clock=world.auth.clock,
    )
    return create_app(auth=engine, options=SidecarOptions())


def wsgi_app(auth: EntraAuth) -> WSGIApp:
    from entra_mw.wsgi import EntraWSGIMiddleware

    def ok(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return EntraWSGIMiddleware(ok, auth=auth, requirement=REQUIREMENT)


def flask_app(auth: EntraAuth) -> WSGIApp:
    from flask import Flask

    from entra_mw.contrib.flask import EntraMW, current_principal, require

    app = Flask("adversarial")
    EntraMW(app, auth=auth)

    @app.get("/me")
    @require(scopes=[SCOPE], roles=[ROLE])
    def me() -> dict[str, str | None]:
        return {"oid": current_principal.oid}

    return app.wsgi_app


@contextlib.contextmanager
def django_settings(world: World) -> Iterator[None]:
    """Django configured for ``world`` through the settings users write (``ENTRA_MW`` and a factory on FakeEntra's
    transports), with the views of ``_django_urls``."""
    from django.test import override_settings

    from tests.contrib.django._django import configure

    configure()
    config = world.config()
    setting = {"tenant_id": config.tenant_id, "client_id": config.client_id, "audiences": list(config.audiences)}

    def factory(cfg: EntraConfig) -> EntraAuth:
        return EntraAuth(cfg, transport=world.fake.transport, async_transport=world.fake.async_transport,
                         clock=world.auth.clock)

    with override_settings(
        ENTRA_MW=setting, ENTRA_MW_AUTH_FACTORY=factory, ROOT_URLCONF="tests.adversarial._django_urls"
    ):
        yield


def django_apps() -> tuple[ASGIApp, WSGIApp]:
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    from tests.contrib.django._django import configure

    configure()
    # Django types its handlers' environ/scope more loosely than these aliases; they are the same protocols.
    return cast("ASGIApp", ASGIHandler()), cast("WSGIApp", WSGIHandler())


# -- in-process drivers -------------------------------------------------------------------------------------


async def call_asgi(
    app: ASGIApp, path: str, headers: Headers = (), query: bytes = b"", method: str = "GET", body: bytes = b""
) -> Reply:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        # ASGI servers lower-case header names (ASGI spec, HTTP connection scope).
        "headers": [(b"host", b"127.0.0.1:8000"), *((k.lower(), v) for k, v in headers)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    incoming: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0
    out_headers: list[tuple[str, str]] = []
    out = bytearray()

    done = anyio.Event()

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        # As a server does: the client stays connected until the response is complete (Django listens for an
        # early disconnect and drops the response if it comes).
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            out.extend(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    return Reply(status, out_headers, bytes(out))


def call_wsgi(
    app: WSGIApp,
    path: str,
    headers: Headers = (),
    query: bytes = b"",
    method: str = "GET",
    environ_extra: dict[str, Any] | None = None,
) -> Reply:
    """As a server builds the environ (PEP 3333): header bytes read as latin-1, repeated headers folded into one
    comma-separated value (what wsgiref, werkzeug and gunicorn do)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    environ.update(environ_extra or {})
    status = 0
    out_headers: list[tuple[str, str]] = []

    def start_response(line: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> None:
        nonlocal status, out_headers
        status = int(line.split()[0])
        out_headers = list(hdrs)

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return Reply(status, out_headers, body)


def folded(headers: Headers) -> bytes | None:
    """The one ``Authorization`` value a WSGI server hands over for ``headers``."""
    values = [v for k, v in headers if k.lower() == b"authorization"]
    return b",".join(values) if values else None


class Adapters:
    """Every adapter's app on ``world``'s engine; ``send(name, headers, query)`` returns what a client saw."""

    def __init__(self, world: World) -> None:
        self.world = world
        mcp, self._mcp_running = mcp_app(world.auth)
        django_asgi, django_wsgi = django_apps()
        self.asgi: dict[str, ASGIApp] = {
            "asgi": asgi_app(world.auth),
            "fastapi": fastapi_app(world.auth),
            "mcp": mcp,
            "sidecar": sidecar_app(world),
            "django-asgi": django_asgi,
        }
        self.wsgi: dict[str, WSGIApp] = {
            "wsgi": wsgi_app(world.auth),
            "flask": flask_app(world.auth),
            "django": django_wsgi,
            "drf": django_wsgi,
        }

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Adapters]:
        with django_settings(self.world):
            async with self._mcp_running():
                yield self

    async def send(self, name: str, headers: Headers = (), query: bytes = b"") -> Reply:
        path = PATHS[name]
        if name == "mcp":
            mcp_headers = [
                (b"accept", b"application/json, text/event-stream"),
                (b"content-type", b"application/json"),
                *headers,
            ]
            return await call_asgi(self.asgi[name], path, mcp_headers, query, method="POST", body=INITIALIZE)
        if name in self.asgi:
            return await call_asgi(self.asgi[name], path, headers, query)
        return call_wsgi(self.wsgi[name], path, headers, query)
