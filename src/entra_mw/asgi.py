"""``EntraMiddleware``: pure ASGI middleware that validates bearer tokens for any ASGI framework.

::

    from entra_mw import EntraAuth, EntraConfig
    from entra_mw.asgi import EntraMiddleware

    auth = EntraAuth(EntraConfig.from_env())
    app.add_middleware(EntraMiddleware, auth=auth, exclude_paths=["/healthz"])   # Starlette / FastAPI
    app = EntraMiddleware(app, auth=auth)                                         # any ASGI app

A request that passes gets an :class:`~entra_mw.AuthContext` at ``scope["entra_mw"]``; one that does not is
answered by the middleware itself (400/401/403/503 with the RFC 6750 challenge) and never reaches the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._bearer import MiddlewareOptions, bearer_from_scope
from ._context import AuthContext
from .errors import AuthError, MissingToken, ProviderUnavailable

__all__ = ["EntraMiddleware"]

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


class EntraMiddleware(MiddlewareOptions[ASGIApp]):
    """Authenticate ``http`` and ``websocket`` requests with a bearer token; pass every other scope through.

    - ``required=True``: no token → 401 with a bare ``Bearer`` challenge. ``required=False``: no token → the
      app runs with an anonymous ``AuthContext`` (``principal is None``); a token that *is* sent must still be
      valid, and ``requirement`` is not checked for anonymous requests.
    - ``exclude_paths``: exact paths (``"/healthz"``) or subtrees (``"/public/*"``, which also matches
      ``/public``) that are not authenticated at all; they get an anonymous ``AuthContext``.
    - ``requirement``: a :class:`~entra_mw.Requirement` every authenticated request must meet, else 403
      ``insufficient_scope`` with ``scope="..."``.

    A websocket handshake is refused before it is accepted: with the denial response (status, challenge and
    body) when the server supports the ``websocket.http.response`` extension, else with close code 1008.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type not in _AUTHENTICATED:
            await self.app(scope, receive, send)
            return
        auth = self.auth
        if self.exclude_paths and scope.get("path") in self.exclude_paths:
            scope[SCOPE_KEY] = AuthContext(auth, None, None)
            await self.app(scope, receive, send)
            return
        try:
            token = bearer_from_scope(scope)
        except MissingToken as exc:
            if self.required:
                await _deny(exc, scope, receive, send)
                return
            scope[SCOPE_KEY] = AuthContext(auth, None, None)
            await self.app(scope, receive, send)
            return
        except AuthError as exc:
            await _deny(exc, scope, receive, send)
            return
        try:
            principal = await auth.avalidate(token)
            if self.requirement is not None:
                self.requirement.check(principal)
        except (AuthError, ProviderUnavailable) as exc:
            await _deny(exc, scope, receive, send)
            return
        scope[SCOPE_KEY] = AuthContext(auth, principal, token)
        # Outside the try: errors raised by the app are the app's business, not a verdict on the token.
        await self.app(scope, receive, send)


def _encode_headers(exc: AuthError | ProviderUnavailable, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in exc.headers()]
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    return headers


async def _deny(exc: AuthError | ProviderUnavailable, scope: Scope, receive: Receive, send: Send) -> None:
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
