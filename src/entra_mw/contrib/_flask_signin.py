"""Web sign-in for Flask: the ``login``/``callback``/``logout`` routes, ``@login_required`` and the signed-in
user, translating :class:`entra_mw._signin.WebSignIn` (which decides everything) into Flask."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, g, redirect, request, url_for
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from .._signin import SignInError, SignInRequired, WebSignIn, cookie_attributes, safe_next

__all__ = ["SignInRoutes", "current_user", "login_required"]

P = ParamSpec("P")
R = TypeVar("R")

_EXTENSION_KEY = "entra_mw.signin"
SESSION_COOKIE = "entra_mw_session"
PENDING_COOKIE = "entra_mw_pending"


class SignInRoutes:
    """Registers the sign-in blueprint on an app and keeps the :class:`WebSignIn` in
    ``app.extensions["entra_mw.signin"]``.

    ::

        SignInRoutes(WebSignIn(auth, scopes=["api://weather/Weather.Read"])).init_app(app)

    Routes (under ``url_prefix``, ``/auth`` by default): ``GET login?next=/path``, ``GET|POST callback`` (the
    redirect URI to register in Entra), ``POST logout`` (a GET is refused: a link or an image on another site
    must not sign users out).
    """

    def __init__(self, signin: WebSignIn, *, url_prefix: str = "/auth", after_logout: str = "/") -> None:
        self.signin = signin
        self.url_prefix = url_prefix.rstrip("/")
        self.after_logout = safe_next(after_logout)

    def init_app(self, app: Flask) -> None:
        app.extensions[_EXTENSION_KEY] = self
        blueprint = Blueprint("entra_mw_signin", __name__, url_prefix=self.url_prefix)
        blueprint.add_url_rule("/login", "login", _login, methods=["GET"])
        blueprint.add_url_rule("/callback", "callback", _callback, methods=["GET", "POST"])
        blueprint.add_url_rule("/logout", "logout", _logout, methods=["POST"])
        app.register_blueprint(blueprint)


def _routes() -> SignInRoutes:
    routes = current_app.extensions.get(_EXTENSION_KEY)
    if not isinstance(routes, SignInRoutes):
        raise RuntimeError("web sign-in is not set up on this app: call SignInRoutes(...).init_app(app) first")
    return routes


def _set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    attrs = cookie_attributes(request.host, max_age=max_age)
    response.set_cookie(name, value, **attrs)


def _delete_cookie(response: Response, name: str) -> None:
    attrs = cookie_attributes(request.host)
    response.delete_cookie(name, path=attrs["path"], secure=attrs["secure"], httponly=True, samesite="Lax")


def _login() -> Response:
    routes = _routes()
    start = routes.signin.start(
        redirect_uri=url_for("entra_mw_signin.callback", _external=True),
        next_path=request.args.get("next"),
        login_hint=request.args.get("login_hint") or None,
    )
    response = redirect(start.url, code=302)
    _set_cookie(response, PENDING_COOKIE, start.pending_id, int(routes.signin.pending_ttl))
    return response


def _callback() -> Response | tuple[str, int, dict[str, str]]:
    routes = _routes()
    params: Mapping[str, str] = request.form if request.method == "POST" else request.args
    try:
        done = routes.signin.finish(request.cookies.get(PENDING_COOKIE), params)
    except SignInError as exc:
        body = f"<!doctype html><title>Sign-in failed</title><h1>Sign-in failed</h1><p>{_escape(exc.description)}</p>"
        return body, exc.status_code, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        # A new session id at every sign-in: whatever id the browser had before is forgotten (no fixation).
        routes.signin.sign_out(old)
    response = redirect(done.next_path, code=302)
    _delete_cookie(response, PENDING_COOKIE)
    _set_cookie(response, SESSION_COOKIE, done.session_id, int(routes.signin.session_ttl))
    return response


def _logout() -> Response:
    routes = _routes()
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        abort(403)
    after = url_for("index", _external=True) if routes.after_logout == "/" and _has_index() else None
    target = after or request.host_url.rstrip("/") + routes.after_logout
    url = routes.signin.sign_out(request.cookies.get(SESSION_COOKIE), post_logout_redirect_uri=target)
    response = redirect(url, code=303)
    _delete_cookie(response, SESSION_COOKIE)
    return response


def _has_index() -> bool:
    return "index" in current_app.view_functions


def _session_user() -> Mapping[str, Any] | None:
    if "_entra_mw_user" not in g:
        routes = current_app.extensions.get(_EXTENSION_KEY)
        user = None
        if isinstance(routes, SignInRoutes):
            user = routes.signin.user(request.cookies.get(SESSION_COOKIE))
        g._entra_mw_user = user
    return cast("Mapping[str, Any] | None", g._entra_mw_user)


#: The signed-in user's claims (``name``, ``preferred_username``, ``oid``, ``tid`` ...), or ``None``.
current_user: Mapping[str, Any] | None = cast("Mapping[str, Any] | None", LocalProxy(_session_user))


def login_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Send anonymous browsers to sign in, then back to this page."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        if _session_user() is None:
            target = safe_next(request.full_path.rstrip("?"))
            return redirect(url_for("entra_mw_signin.login", next=target), code=302)
        try:
            return view(*args, **kwargs)
        except SignInRequired:
            target = safe_next(request.full_path.rstrip("?"))
            return redirect(url_for("entra_mw_signin.login", next=target), code=302)

    return wrapper


def user_access_token(scopes: list[str]) -> str:
    """An access token for the signed-in user and ``scopes`` (silently refreshed). Raises ``SignInRequired``."""
    return _routes().signin.access_token(request.cookies.get(SESSION_COOKIE), scopes=scopes)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
