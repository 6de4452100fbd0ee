"""``EntraMiddleware``: pure ASGI middleware that validates bearer tokens for any ASGI framework.

::

    from entra_mw import EntraAuth, EntraConfig
    from entra_mw.asgi import EntraMiddleware, get_context

    auth = EntraAuth(EntraConfig.from_env())
    app.add_middleware(EntraMiddleware, auth=auth, exclude_paths=["/healthz"])   # Starlette / FastAPI
    app = EntraMiddleware(app, auth=auth)                                         # any ASGI app

    async def endpoint(request):
        principal = get_context(request).principal                                # typed: Principal | None

A request that passes gets an :class:`~entra_mw.AuthContext` at ``scope["entra_mw"]``; one that does not is
answered by the middleware itself (400/401/403/503 with the RFC 6750 challenge) and never reaches the app. The
decisions are :meth:`EntraAuth.aauthenticate`'s; this module only translates ASGI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol

from ._bearer import authorization_from_scope
from ._context import AuthContext
from ._middleware import MiddlewareOptions
from .errors import EntraError

__all__ = ["SCOPE_KEY", "EntraMiddleware", "get_context"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The slot every adapter reads: ``scope["entra_mw"]``.
SCOPE_KEY = "entra_mw"

# RFC 6455 §7.4.1: 1008 "policy violation" closes a refused connection (1000 would mean success).
_WS_POLICY_VIOLATION = 1008
_AUTHENTICATED = frozenset({"http", "websocket"})


class _HasScope(Protocol):
    @property
    def scope(self) -> Mapping[str, Any]: ...


def get_context(request: Mapping[str, Any] | _HasScope) -> AuthContext:
    """The :class:`~entra_mw.AuthContext` the middleware attached, from an ASGI scope or any object with a
    ``.scope`` (Starlette's ``Request`` and ``WebSocket``). Typed, so ``mypy`` knows ``principal`` may be
    ``None``. Raises ``LookupError`` when no ``EntraMiddleware`` ran for this request.

    ::

        ctx = get_context(request)
        if ctx.principal is not None:
            ...
    """
    scope = request if isinstance(request, Mapping) else request.scope
    ctx = scope.get(SCOPE_KEY)
    if not isinstance(ctx, AuthContext):
        raise LookupError("this request has no entra_mw context: is entra_mw.asgi.EntraMiddleware installed?")
    return ctx


class EntraMiddleware(MiddlewareOptions[ASGIApp]):
    """Authenticate ``http`` and ``websocket`` requests with a bearer token; pass every other scope through.

    - ``required=True``: no token → 401 with a bare ``Bearer`` challenge. ``required=False``: no token → the
      app runs with an anonymous ``AuthContext`` (``principal is None``); a token that *is* sent must still be
      valid, and ``requirement`` is not checked for anonymous requests.
    - ``exclude_paths``: exact paths (``"/healthz"``) or subtrees (``"/public/*"``, which also matches
      ``/public``) that are not authenticated at all; they get an anonymous ``AuthContext``.
    - ``requirement``: a :class:`~entra_mw.Requirement` every authenticated request must meet, else 403
      ``insufficient_scope`` with ``scope="..."``.
    - ``challenge``: a :class:`~entra_mw.Challenge` whose parameters (``resource_metadata``, ``scope``,
      ``realm``) every 401/403 carries, as MCP clients expect.

    A websocket handshake is refused before it is accepted: with the denial response (status, challenge and
    body) when the server supports the ``websocket.http.response`` extension, else with close code 1008.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _AUTHENTICATED:
            await self.app(scope, receive, send)
            return
        if self.exclude_paths and scope.get("path") in self.exclude_paths:
            scope[SCOPE_KEY] = AuthContext(self.auth, None, None)
            await self.app(scope, receive, send)
            return
        try:
            ctx = await self.auth.aauthenticate(
                authorization_from_scope(scope),
                query=scope.get("query_string"),
                required=self.required,
                requirement=self.requirement,
                challenge=self.challenge,
            )
        except EntraError as exc:
            await _deny(exc, scope, receive, send)
            return
        scope[SCOPE_KEY] = ctx
        # Outside the try: errors raised by the app are the app's business, not a verdict on the token.
        await self.app(scope, receive, send)


def _encode_headers(exc: EntraError, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in exc.headers()]
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    return headers


async def _deny(exc: EntraError, scope: Scope, receive: Receive, send: Send) -> None:
    body = exc.body()
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": exc.status_code, "headers": _encode_headers(exc, body)})
        await send({"type": "http.response.body", "body": body})
        return
    # websocket: the server sends "websocket.connect" first (ASGI spec); refuse before accepting.
    message = await receive()
    if message.get("type") == "websocket.disconnect":
        return
    extensions = scope.get("extensions") or {}
    if "websocket.http.response" in extensions:
        await send(
            {
                "type": "websocket.http.response.start",
                "status": exc.status_code,
                "headers": _encode_headers(exc, body),
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        # A close reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5).
        reason = exc.description.encode()[:120].decode("utf-8", "ignore")
        await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION, "reason": reason})
