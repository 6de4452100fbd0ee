"""Web sign-in for Flask: the ``login``/``callback``/``logout`` routes, ``@login_required`` and the signed-in
user, translating :class:`entra_mw.WebSignIn` (which decides everything) into Flask.

::

    from entra_mw import WebSignIn
    from entra_mw.contrib._flask_signin import current_user, init_sign_in, login_required

    init_sign_in(app, WebSignIn(auth, scopes=["api://weather/Weather.Read"]))

    @app.get("/")
    @login_required
    def home():
        return f"Hello {current_user.name}"

Routes (under ``url_prefix``, ``/auth`` by default; endpoint names ``entra_mw_signin.login`` ...):
``GET login?next=/path``, ``GET|POST callback`` (the redirect URI to register in Entra: ``…/auth/callback``),
``POST logout`` (from this app's own pages only; a GET is 405, so a link or an image elsewhere cannot sign
users out). State lives in ``app.extensions["entra_mw.signin"]``; the request's user in ``g._entra_mw_user``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ParamSpec, TypeVar, cast

from flask import Blueprint, Flask, current_app, g, redirect, request, url_for
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from .._downstream import Downstream
from .._signin import ANONYMOUS, PENDING_COOKIE, SESSION_COOKIE, User, WebSignIn, error_page, safe_next, same_origin
from ..errors import EntraError

__all__ = [
    "current_user",
    "init_sign_in",
    "login_required",
    "session_downstream",
    "sign_in_of",
    "user_authorization_header",
]

P = ParamSpec("P")
R = TypeVar("R")

_EXTENSION_KEY = "entra_mw.signin"
_BLUEPRINT = "entra_mw_signin"


@dataclass(frozen=True, slots=True, kw_only=True)
class _SignInState:
    signin: WebSignIn
    after_logout: str


def init_sign_in(app: Flask, signin: WebSignIn, *, url_prefix: str = "/auth", after_logout: str = "/") -> None:
    """Register the sign-in routes on ``app`` (see the module docstring). ``after_logout``: the path of this
    app Entra sends the browser back to after sign-out (register ``{origin}{after_logout}`` as a redirect URI
    too)."""
    if _EXTENSION_KEY in app.extensions:
        raise RuntimeError("web sign-in is already set up on this app")
    app.extensions[_EXTENSION_KEY] = _SignInState(signin=signin, after_logout=safe_next(after_logout))
    blueprint = Blueprint(_BLUEPRINT, __name__, url_prefix=url_prefix.rstrip("/") or None)
    blueprint.add_url_rule("/login", "login", _login, methods=["GET"])
    blueprint.add_url_rule("/callback", "callback", _callback, methods=["GET", "POST"])
    blueprint.add_url_rule("/logout", "logout", _logout, methods=["POST"])
    app.register_blueprint(blueprint)


def sign_in_of(app: Flask | None = None) -> WebSignIn:
    """The :class:`WebSignIn` of ``app`` (default: the current app)."""
    return _state(app).signin


def _state(app: Flask | None = None) -> _SignInState:
    state = (app or current_app).extensions.get(_EXTENSION_KEY)
    if not isinstance(state, _SignInState):
        raise RuntimeError("web sign-in is not set up on this app: pass sign_in= to EntraMW (or call init_sign_in)")
    return state


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(exc: EntraError) -> Response:
    response = Response(error_page(exc), status=exc.status_code, content_type="text/html; charset=utf-8")
    return _no_store(response)


def _login() -> Response:
    signin = _state().signin
    try:
        start = signin.start(
            redirect_uri=url_for(f"{_BLUEPRINT}.callback", _external=True),
            next_path=request.args.get("next"),
            login_hint=request.args.get("login_hint") or None,
        )
    except EntraError as exc:
        return _error_page(exc)
    response = redirect(start.url, code=302)
    response.set_cookie(PENDING_COOKIE, start.pending_id, **signin.pending_cookie(request.host))
    return _no_store(response)


def _callback() -> Response:
    signin = _state().signin
    params: Mapping[str, str] = request.form if request.method == "POST" else request.args
    try:
        done = signin.finish(request.cookies.get(PENDING_COOKIE), params)
    except EntraError as exc:
        response = _error_page(exc)
    else:
        old = request.cookies.get(SESSION_COOKIE)
        if old:
            # A new session id at every sign-in; whatever session the browser had before is ended (no fixation).
            signin.sign_out(old)
        response = redirect(done.next_path, code=303)
        response.set_cookie(SESSION_COOKIE, done.session_id, **signin.session_cookie(request.host))
    attrs = signin.pending_cookie(request.host)
    response.delete_cookie(
        PENDING_COOKIE, path=attrs["path"], secure=attrs["secure"], httponly=True, samesite=attrs["samesite"]
    )
    return _no_store(response)


def _logout() -> Response:
    state = _state()
    signin = state.signin
    if not same_origin(
        host=request.host, origin=request.headers.get("Origin"), fetch_site=request.headers.get("Sec-Fetch-Site")
    ):
        return _no_store(Response("Sign-out must come from this site.", status=403, content_type="text/plain"))
    url = signin.sign_out(
        request.cookies.get(SESSION_COOKIE), post_logout_redirect_uri=request.host_url.rstrip("/") + state.after_logout
    )
    response = redirect(url, code=303)
    attrs = signin.session_cookie(request.host)
    response.delete_cookie(
        SESSION_COOKIE, path=attrs["path"], secure=attrs["secure"], httponly=True, samesite=attrs["samesite"]
    )
    return _no_store(response)


def _session_user() -> User:
    user = g.get("_entra_mw_user")
    if user is None:
        state = current_app.extensions.get(_EXTENSION_KEY)
        user = ANONYMOUS
        if isinstance(state, _SignInState):
            user = state.signin.user(request.cookies.get(SESSION_COOKIE))
        g._entra_mw_user = user
    return cast("User", user)


#: The signed-in :class:`~entra_mw.User` of this request (``if current_user:``; anonymous when nobody is signed in).
current_user: User = cast("User", LocalProxy(_session_user))


def _to_login() -> Response:
    target = safe_next(request.full_path.rstrip("?") if request.query_string else request.path)
    return _no_store(redirect(url_for(f"{_BLUEPRINT}.login", next=target), code=302))


def login_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Send browsers with no signed-in user to sign in, then back to this page. Also when the view finds the
    session can no longer get tokens silently (:class:`~entra_mw.SignInRequired`)."""
    from .._signin import SignInRequired

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        if not _session_user():
            return _to_login()
        try:
            return view(*args, **kwargs)
        except SignInRequired:
            return _to_login()

    return wrapper


def user_authorization_header(scopes: list[str]) -> str:
    """``"Bearer …"`` for the signed-in user and ``scopes`` (silently refreshed). Raises
    :class:`~entra_mw.SignInRequired` (``@login_required`` turns it into a new sign-in)."""
    return _state().signin.authorization_header(request.cookies.get(SESSION_COOKIE), scopes=scopes)


def session_downstream() -> Downstream | None:
    """A :class:`~entra_mw.Downstream` acting for the signed-in user of this request, or ``None`` when web
    sign-in is not set up or nobody is signed in (what ``current_downstream`` serves without a bearer caller)."""
    state = current_app.extensions.get(_EXTENSION_KEY)
    if not isinstance(state, _SignInState) or not _session_user():
        return None
    downstream = g.get("_entra_mw_session_downstream")
    if not isinstance(downstream, Downstream):
        downstream = state.signin.downstream(request.cookies.get(SESSION_COOKIE))
        g._entra_mw_session_downstream = downstream
    return downstream
