"""An MCP server protected by Entra ID, with two tools, and the downstream API one of them calls.

- ``whoami`` needs only a valid token for the server (and the server-wide scope ``Tools.Use``).
- ``forecast`` also needs the delegated scope ``Forecast.Read`` and calls the ``forecast`` downstream API
  On-Behalf-Of the caller; a caller without the scope gets HTTP 403 ``insufficient_scope`` naming it.

Configuration comes from an :class:`~entra_mw.EntraConfig` (in production ``EntraConfig.from_env()``: the
sidecar's ``AzureAd__*`` and ``DownstreamApis__forecast__*`` variables) and the server's public URL, which must
also be one of the app's App ID URIs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mcp.server.mcpserver import MCPServer

from entra_mw import EntraAuth, Requirement
from entra_mw.asgi import EntraMiddleware, get_context
from entra_mw.contrib.mcp import (
    EntraTokenVerifier,
    ScopeChallengeMiddleware,
    auth_settings,
    current_downstream,
    current_principal,
    require,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Every MCP request needs this scope; ``forecast`` needs ``FORECAST_SCOPE`` too.
SERVER_SCOPE = "Tools.Use"
FORECAST_SCOPE = "Forecast.Read"


def build_mcp_app(auth: EntraAuth, *, resource: str) -> ASGIApp:
    """The MCP server's ASGI app (streamable HTTP at the resource's path), with the scope challenges."""
    settings = auth_settings(auth, resource_server_url=resource, scopes=[SERVER_SCOPE])
    verifier = EntraTokenVerifier(auth, resource=resource)
    mcp = MCPServer("forecast-mcp", token_verifier=verifier, auth=settings, log_level="WARNING")

    @mcp.tool()
    async def whoami() -> dict[str, Any]:
        """Who is calling: the verified caller's name, object id and tenant."""
        principal = current_principal()
        return {"name": principal.get("name"), "oid": principal.oid, "tid": principal.tid}

    @mcp.tool()
    @require(scopes=[FORECAST_SCOPE])
    async def forecast(city: str) -> dict[str, Any]:
        """Tomorrow's forecast for a city, from the forecast API (called On-Behalf-Of the caller)."""
        response = await current_downstream().acall("forecast", "forecast", params={"city": city})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    path = urlsplit(resource).path or "/mcp"
    app = mcp.streamable_http_app(streamable_http_path=path)
    return ScopeChallengeMiddleware(app, settings=settings, verifier=verifier, tools=[forecast])


@dataclass
class Recorder:
    """What the forecast API saw: a digest of each bearer token (never the token) and its caller's claims."""

    token_digests: list[str] = field(default_factory=list)
    callers: list[dict[str, Any]] = field(default_factory=list)


def build_forecast_api(auth: EntraAuth, recorder: Recorder | None = None) -> ASGIApp:
    """A tiny downstream API protected by the plain ASGI middleware: ``GET /forecast?city=...``."""

    async def api(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("path") != "/forecast":
            body = b'{"error":"not_found"}'
            await send(
                {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        ctx = get_context(scope)
        principal = ctx.require()  # the middleware lets no anonymous request through; this says so to the type checker
        if recorder is not None:
            recorder.token_digests.append(hashlib.sha256((ctx.token or "").encode()).hexdigest())
            recorder.callers.append(
                {
                    "aud": principal.get("aud"),
                    "azp": principal.client_id,
                    "oid": principal.oid,
                    "scp": principal.get("scp"),
                }
            )
        query = dict(part.split("=", 1) for part in scope.get("query_string", b"").decode().split("&") if "=" in part)
        body = json.dumps({"city": query.get("city", ""), "forecast": "sunny", "for": principal.get("name")}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return EntraMiddleware(api, auth=auth, requirement=Requirement(scopes=[FORECAST_SCOPE]))


def closing(app: ASGIApp, *engines: EntraAuth) -> ASGIApp:
    """``app`` whose lifespan shutdown also closes ``engines`` (their async HTTP pools belong to the server's
    event loop)."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                for engine in engines:
                    await engine.aclose()
            await send(message)

        await app(scope, receive, send_closing)

    return wrapper


def mount(routes: dict[str, ASGIApp], default: ASGIApp) -> ASGIApp:
    """Dispatch by path prefix (``{"/forecast-api": app}``), stripping the prefix; everything else to ``default``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope.get("path", "")
            for prefix, target in routes.items():
                if path == prefix or path.startswith(prefix + "/"):
                    child = dict(scope)
                    child["path"] = path[len(prefix) :] or "/"
                    child["root_path"] = scope.get("root_path", "") + prefix
                    await target(child, receive, send)
                    return
        await default(scope, receive, send)

    return app
