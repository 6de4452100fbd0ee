"""Flask integration: an extension that authenticates every request, ``@require`` for scopes and app roles, and
``current_principal`` / ``current_downstream`` for the caller.

::

    from flask import Flask
    from entra_mw.contrib.flask import EntraMW, current_downstream, current_principal, require

    app = Flask(__name__)
    app.config["ENTRA_MW"] = "env"                  # or {"tenant_id": ..., "client_id": ...}
    entra = EntraMW(app)                            # or: entra = EntraMW(); entra.init_app(app) in a factory

    @app.get("/forecast")
    @require(scopes=["Weather.Read"])
    def forecast():
        upstream = current_downstream.call("provider", "forecast")   # On-Behalf-Of the caller
        return {"caller": current_principal.oid, "forecast": upstream.json()}

Configuration (``app.config``):

- ``ENTRA_MW``: a mapping of :meth:`EntraConfig.from_mapping` names, an ``EntraConfig``, or ``"env"`` for the
  sidecar's ``AzureAd__*`` variables. Not read when the extension was given ``auth=``.
- ``ENTRA_MW_AUTH_FACTORY``: a callable (or its dotted path) taking the ``EntraConfig`` and returning the
  ``EntraAuth``, for a custom HTTP client or FakeEntra's transport in tests.
- ``ENTRA_MW_REQUIRED`` (default ``True``, ``False`` with web sign-in): every request needs a valid bearer token.
  ``False``: requests without one pass anonymously and only ``@require`` views demand one. A token that *is* sent
  must be valid either way.
- ``ENTRA_MW_SIGNIN`` (default none): web sign-in for browsers — a mapping (``scopes``, ``url_prefix`` ``"/auth"``,
  ``after_logout`` ``"/"``, ``response_mode``, ``session_ttl``, ``pending_ttl``, ``store``) or a ``WebSignIn``;
  or pass ``sign_in=WebSignIn(auth, scopes=[...])`` to the extension. It registers ``GET {url_prefix}/login``,
  ``GET|POST {url_prefix}/callback`` (the redirect URI) and ``POST {url_prefix}/logout``; ``@login_required``
  and ``current_user`` then serve the signed-in user (docs/web-sign-in.md).
- ``ENTRA_MW_EXCLUDE_PATHS`` (default none): paths (``"/healthz"``) or subtrees (``"/static/*"``) that need no
  token unless their view is decorated with ``@require``.

Refusals are JSON with the RFC 6750 challenge (400/401/403/503, rendered by the error itself); so is every
:class:`~entra_mw.EntraError` a view raises (a downstream API that cannot be reached, a token Entra refused).
State lives in ``app.extensions["entra_mw"]`` and the request's context in ``g._entra_mw``, so one extension
serves several apps, each with its own tenant. An engine built from ``ENTRA_MW`` is closed when its app is
collected or the process exits; an engine passed as ``auth=`` stays yours to close.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, request
from werkzeug.local import LocalProxy

from .._context import AuthContext
from .._downstream import Downstream
from .._engine import EntraAuth
from .._middleware import PathExclusions
from .._principal import Principal
from .._requirements import Requirement
from .._settings import auth_from_settings
from .._signin import WebSignIn, sign_in_from_settings
from ..errors import EntraError
from ..wsgi import ENVIRON_KEY
from ._flask_signin import current_user, init_sign_in, login_required, session_downstream, user_authorization_header

__all__ = [
    "EntraMW",
    "current_downstream",
    "current_principal",
    "current_user",
    "get_context",
    "login_required",
    "require",
    "user_authorization_header",
]

_EXTENSION_KEY = "entra_mw"
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True, kw_only=True, weakref_slot=True)
class _State:
    """What one app's extension holds (``app.extensions["entra_mw"]``). Parts added to the extension later (web
    sign-in's login/callback/logout routes) keep their per-app state here too, never on the extension object."""

    auth: EntraAuth
    required: bool
    exclude_paths: PathExclusions


class EntraMW:
    """The Flask extension: ``EntraMW(app)``, or ``entra = EntraMW()`` then ``entra.init_app(app)`` per app.

    ``auth`` gives every app this engine; without it each app builds its own from ``app.config["ENTRA_MW"]``
    (see the module docstring for every configuration key).
    """

    def __init__(
        self, app: Flask | None = None, *, auth: EntraAuth | None = None, sign_in: WebSignIn | None = None
    ) -> None:
        if auth is not None and not isinstance(auth, EntraAuth):
            raise TypeError("EntraMW needs auth=EntraAuth(...) or None")
        if sign_in is not None and not isinstance(sign_in, WebSignIn):
            raise TypeError("EntraMW needs sign_in=WebSignIn(auth, ...) or None")
        self._auth = auth  # configuration shared by every app; per-app state lives in app.extensions
        self._sign_in = sign_in
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read ``app``'s configuration, build its engine and install the request hook and error handler."""
        if _EXTENSION_KEY in app.extensions:
            raise RuntimeError("entra_mw is already set up on this app")
        config = app.config
        auth = self._auth
        if auth is None:
            auth = auth_from_settings(config.get("ENTRA_MW"), config.get("ENTRA_MW_AUTH_FACTORY"))
        signin = sign_in_from_settings(auth, self._sign_in or config.get("ENTRA_MW_SIGNIN"))
        excluded = config.get("ENTRA_MW_EXCLUDE_PATHS", ())
        excluded = [excluded] if isinstance(excluded, str) else list(excluded)
        if signin is not None:
            # Browsers reach the sign-in routes without a bearer token, whatever ENTRA_MW_REQUIRED says.
            excluded.append(f"{signin.url_prefix}/*")
        state = _State(
            auth=auth,
            required=bool(config.get("ENTRA_MW_REQUIRED", signin is None)),
            exclude_paths=PathExclusions(excluded),
        )
        if self._auth is None:
            # One engine per app for the app's lifetime (its pools, keys and tokens), never per request.
            weakref.finalize(state, auth.close)
        app.extensions[_EXTENSION_KEY] = state
        app.before_request(_before_request)
        app.register_error_handler(EntraError, _render)
        if signin is not None:
            init_sign_in(app, signin.sign_in, url_prefix=signin.url_prefix, after_logout=signin.after_logout)


def _state() -> _State:
    state = current_app.extensions.get(_EXTENSION_KEY)
    if not isinstance(state, _State):
        raise RuntimeError(
            "entra_mw is not set up on this app: did you call EntraMW(app) or entra.init_app(app)?"
        )
    return state


def _render(exc: EntraError) -> Response:
    return Response(exc.body(), status=exc.status_code, headers=exc.headers())


def _attach(state: _State, *, required: bool) -> AuthContext:
    environ = request.environ
    ctx = state.auth.authenticate(
        environ.get("HTTP_AUTHORIZATION"), query=environ.get("QUERY_STRING"), required=required
    )
    g._entra_mw = ctx
    return ctx


def _before_request() -> Response | None:
    """Attach the request's context at ``g._entra_mw``, or answer the refusal."""
    state = _state()
    attached = request.environ.get(ENVIRON_KEY)
    if isinstance(attached, AuthContext) and attached.principal is not None:
        g._entra_mw = attached  # EntraWSGIMiddleware already validated this request
        return None
    # Excluded paths need no token, but one that is sent must still be valid.
    required = state.required and not (state.exclude_paths and request.path in state.exclude_paths)
    try:
        _attach(state, required=required)
    except EntraError as exc:
        return _render(exc)
    return None


def get_context() -> AuthContext:
    """The request's :class:`~entra_mw.AuthContext` (``principal`` is ``None`` for an anonymous request)."""
    state = _state()  # the friendly error when init_app was not called
    ctx = g.get("_entra_mw")
    if not isinstance(ctx, AuthContext):
        # The request hook did not run (a test_request_context, a view called directly): authenticate now.
        ctx = _attach(state, required=state.required)
    return ctx


def _caller(requirement: Requirement | None = None) -> AuthContext:
    """The context of a view that needs a caller; raises the ``EntraError`` the app's handler renders."""
    ctx = get_context()
    if ctx.principal is None:
        # Anonymous so far (optional mode or an excluded path), but this view needs a caller.
        ctx = _attach(_state(), required=True)
    ctx.require(requirement)
    return ctx


def require(*, scopes: Iterable[str] = (), roles: Iterable[str] = ()) -> Callable[[_F], _F]:
    """View decorator: the caller must hold one of ``scopes`` (delegated) or one of ``roles`` (app permissions);
    403 ``insufficient_scope`` otherwise, 401 without a valid token. With neither, any valid caller passes::

        @app.get("/stations")
        @require(roles=["Weather.Read.All"])
        def stations(): ...
    """
    # A string is one space-separated list, as in a token's scp claim.
    requirement = Requirement(
        scopes=scopes if isinstance(scopes, str) else tuple(scopes),
        roles=roles if isinstance(roles, str) else tuple(roles),
    )

    def decorate(view: _F) -> _F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _caller(requirement)
            return current_app.ensure_sync(view)(*args, **kwargs)

        return cast("_F", wrapper)

    return decorate


def _current_principal() -> Principal:
    principal = _caller().principal
    assert principal is not None
    return principal


def _current_downstream() -> Downstream:
    if get_context().principal is None:
        # No bearer caller: a browser's signed-in user, when web sign-in is set up (tokens from the session).
        signed_in = session_downstream()
        if signed_in is not None:
            return signed_in
    return _caller().downstream


#: The verified caller of the current request (401 when there is none).
current_principal: Principal = cast("Principal", LocalProxy(_current_principal))
#: A :class:`Downstream` acting for the current caller (On-Behalf-Of; app-only with ``app=True``), or, with web
#: sign-in and no bearer caller, for the signed-in user (delegated tokens from the session). Flask runs each
#: ``async`` view in its own event loop: use the sync methods (``current_downstream.call(...)``).
current_downstream: Downstream = cast("Downstream", LocalProxy(_current_downstream))
