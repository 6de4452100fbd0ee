"""FastAPI integration: dependencies for the caller and its downstream APIs, error rendering, Swagger's lock.

::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from entra_mw import EntraAuth, EntraConfig, Principal
    from entra_mw.contrib.fastapi import DownstreamDep, PrincipalDep, require, setup

    auth = EntraAuth(EntraConfig.from_env())
    app = FastAPI()
    setup(app, auth)

    @app.get("/forecast")
    async def forecast(user: Annotated[Principal, Depends(require(scopes=["Weather.Read"]))],
                       downstream: DownstreamDep) -> dict[str, str]:
        response = await downstream.acall("graph", "me")       # On-Behalf-Of the caller
        ...

The dependencies read the context ``entra_mw.asgi.EntraMiddleware`` attached when it is installed; without it
they authenticate the request themselves, once per request however many dependencies ask (the context is kept at
``scope["entra_mw"]``, the middleware's slot). The decisions are :meth:`EntraAuth.aauthenticate`'s and
:meth:`AuthContext.require`'s; this module only translates FastAPI.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.requests import HTTPConnection, Request
from fastapi.responses import Response
from fastapi.security.base import SecurityBase

from .._bearer import authorization_from_scope
from .._context import AuthContext
from .._downstream import Downstream
from .._engine import EntraAuth
from .._principal import Principal
from .._requirements import Requirement
from ..asgi import SCOPE_KEY
from ..errors import ConfigurationError, EntraError

__all__ = ["SCHEME_NAME", "DownstreamDep", "PrincipalDep", "require", "setup"]

#: The name of the OpenAPI security scheme every protected operation refers to.
SCHEME_NAME = "EntraID"
_STATE_KEY = "entra_mw"


class _EntraBearer(SecurityBase):
    """The request's :class:`AuthContext` as a FastAPI security dependency, so each operation that needs a caller
    carries the scheme (Swagger's lock). Until :func:`setup` describes the tenant, the scheme is a plain bearer
    token."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(bearerFormat="JWT", description="A Microsoft Entra ID access token.")
        self.scheme_name = SCHEME_NAME

    async def __call__(self, connection: HTTPConnection) -> AuthContext:
        scope = connection.scope
        ctx = scope.get(SCOPE_KEY)
        # The middleware's context, or this request's earlier answer: nothing is validated twice. An anonymous
        # context (optional mode, excluded path) is authenticated here, because this route needs a caller.
        if isinstance(ctx, AuthContext) and ctx.principal is not None:
            return ctx
        auth = ctx.auth if isinstance(ctx, AuthContext) else _engine(connection.app)
        try:
            ctx = await auth.aauthenticate(authorization_from_scope(scope), query=scope.get("query_string"))
        except EntraError as exc:
            raise _for(connection.app, exc) from None
        scope[SCOPE_KEY] = ctx
        return ctx


_SCHEME = _EntraBearer()


def _engine(app: Any) -> EntraAuth:
    auth = getattr(app.state, _STATE_KEY, None) if app is not None else None
    if not isinstance(auth, EntraAuth):
        raise RuntimeError(
            "entra_mw is not set up on this app: call entra_mw.contrib.fastapi.setup(app, auth) "
            "or add entra_mw.asgi.EntraMiddleware"
        )
    return auth


def _for(app: Any, exc: EntraError) -> Exception:
    # With setup() the app's handler renders the error itself; without it, FastAPI's HTTPException handler still
    # answers with the right status and challenge.
    if app is not None and getattr(app.state, _STATE_KEY, None) is not None:
        return exc
    headers = {name: value for name, value in exc.headers() if name.lower() != "content-type"}
    return HTTPException(exc.status_code, detail=exc.body_dict(), headers=headers)


def require(*, scopes: Iterable[str] = (), roles: Iterable[str] = ()) -> Callable[..., Awaitable[Principal]]:
    """A dependency whose value is the caller's :class:`Principal`, checked against ``scopes`` (delegated) and
    ``roles`` (app permissions): either one matching grants access (403 ``insufficient_scope`` otherwise, 401
    without a valid token). Use it as a parameter, in ``dependencies=[...]`` or on a router::

        user: Annotated[Principal, Depends(require(scopes=["Weather.Read"]))]
        @app.get("/stations", dependencies=[Depends(require(roles=["Weather.Read.All"]))])
        router = APIRouter(dependencies=[Depends(require(scopes=["Weather.Read"]))])
    """
    # A string is one space-separated list, as in a token's scp claim.
    requirement = Requirement(
        scopes=scopes if isinstance(scopes, str) else tuple(scopes),
        roles=roles if isinstance(roles, str) else tuple(roles),
    )

    async def dependency(connection: HTTPConnection, ctx: AuthContext) -> Principal:
        try:
            return ctx.require(requirement)
        except EntraError as exc:
            raise _for(connection.app, exc) from None

    # The operation lists the scopes it needs (OpenAPI security requirement); FastAPI reads them from here.
    context = Annotated[AuthContext, Security(_SCHEME, scopes=list(requirement.scopes))]
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("connection", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection),
            inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=context),
        ],
        return_annotation=Principal,
    )
    return dependency


async def _principal(connection: HTTPConnection, ctx: Annotated[AuthContext, Security(_SCHEME)]) -> Principal:
    try:
        return ctx.require()
    except EntraError as exc:
        raise _for(connection.app, exc) from None


async def _downstream(connection: HTTPConnection, ctx: Annotated[AuthContext, Security(_SCHEME)]) -> Downstream:
    await _principal(connection, ctx)
    return ctx.downstream


#: The verified caller (401 without a valid token): ``async def me(user: PrincipalDep)``.
PrincipalDep = Annotated[Principal, Depends(_principal)]
#: A :class:`Downstream` acting for the caller (On-Behalf-Of; app-only with ``app=True``). Async endpoints use
#: ``await downstream.acall(...)``; sync endpoints run in FastAPI's thread pool and use ``downstream.call(...)``.
DownstreamDep = Annotated[Downstream, Depends(_downstream)]


# RFC 6455 §7.4.1: 1008 "policy violation" closes a refused handshake (1000 would mean success).
_WS_POLICY_VIOLATION = 1008


async def _render(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EntraError)
    return Response(exc.body(), status_code=exc.status_code, headers=dict(exc.headers()))


async def _render_any(connection: Any, exc: Exception) -> Response | None:
    """``_render`` for HTTP, and for a websocket handshake whose server offers the denial response
    (``websocket.http.response``); other servers cannot send one, so the handshake is refused with 1008."""
    assert isinstance(exc, EntraError)
    scope = connection.scope
    if scope["type"] == "websocket" and "websocket.http.response" not in (scope.get("extensions") or {}):
        # A close reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5).
        reason = exc.description.encode()[:120].decode("utf-8", "ignore")
        await connection.close(code=_WS_POLICY_VIOLATION, reason=reason)
        return None
    return await _render(connection, exc)


def setup(
    app: FastAPI,
    auth: EntraAuth,
    *,
    scopes: Iterable[str] = (),
    app_id_uri: str | None = None,
    swagger_client_id: str | None = None,
) -> None:
    """Use ``auth`` for ``app``: keep the engine on ``app.state``, render every :class:`~entra_mw.EntraError`
    (status, challenge, JSON body), describe the tenant in the OpenAPI document and close the engine when the app
    shuts down (after the app's own lifespan).

    The OpenAPI security scheme is OAuth 2.0 authorization code with PKCE against the tenant's v2 endpoints, so
    Swagger UI shows the lock and "Authorize" signs a user in. Its scopes are those the routes require plus
    ``scopes``, in full form (``{app_id_uri}/Weather.Read``; ``app_id_uri`` defaults to ``api://{client_id}``).
    Swagger UI signs in as ``swagger_client_id`` (default: the API's own client id), an app registration with
    the single-page-application redirect URI ``https://<host>/docs/oauth2-redirect``.
    """
    if not isinstance(auth, EntraAuth):
        raise TypeError("setup() needs auth=EntraAuth(...)")
    current = getattr(app.state, _STATE_KEY, None)
    if current is auth:
        return
    if current is not None:
        raise ConfigurationError("setup() was already called for this app with another engine", key="auth")
    setattr(app.state, _STATE_KEY, auth)
    # Starlette hands the handler the WebSocket for websocket scopes and sends nothing when it returns None.
    app.add_exception_handler(EntraError, _render_any)  # type: ignore[arg-type]

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        try:
            async with inner(target) as state:
                yield state
        finally:
            await auth.aclose()  # the async client belongs to this event loop

    app.router.lifespan_context = lifespan

    config = auth.config
    uri = (app_id_uri or f"api://{config.client_id}").rstrip("/")
    extra = tuple(scopes)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        _describe(schema, authority=config.authority, uri=uri, extra=extra)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    oauth: dict[str, Any] = {
        "clientId": swagger_client_id or config.client_id,
        "usePkceWithAuthorizationCodeGrant": True,
    }
    if extra:
        oauth["scopes"] = " ".join(_full(s, uri) for s in extra)
    app.swagger_ui_init_oauth = {**oauth, **(app.swagger_ui_init_oauth or {})}


def _full(scope: str, uri: str) -> str:
    return scope if "/" in scope else f"{uri}/{scope}"


def _describe(schema: dict[str, Any], *, authority: str, uri: str, extra: tuple[str, ...]) -> None:
    """Rewrite the placeholder bearer scheme as the tenant's authorization-code flow (idempotent: FastAPI caches
    the schema and this runs on every read)."""
    wanted = {_full(s, uri): s for s in extra}
    paths: Mapping[str, Any] = schema.get("paths", {})
    for item in paths.values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for requirement in operation.get("security", ()):
                if SCHEME_NAME in requirement:
                    full = [_full(s, uri) for s in requirement[SCHEME_NAME]]
                    requirement[SCHEME_NAME] = full
                    wanted.update({s: s.rsplit("/", 1)[-1] for s in full})
    schemes = schema.get("components", {}).get("securitySchemes", {})
    if SCHEME_NAME not in schemes:
        return
    if not wanted:
        wanted = {f"{uri}/.default": "every permission granted to the client"}
    schemes[SCHEME_NAME] = {
        "type": "oauth2",
        "description": "Microsoft Entra ID: sign in with authorization code and PKCE.",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": f"{authority}/oauth2/v2.0/authorize",
                "tokenUrl": f"{authority}/oauth2/v2.0/token",
                "scopes": dict(sorted(wanted.items())),
            }
        },
    }
