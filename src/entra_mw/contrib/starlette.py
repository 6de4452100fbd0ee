"""Web sign-in for Starlette (and FastAPI, which is Starlette): the ``login``/``callback``/``logout`` routes, a
``login_required`` decorator and a dependency for the signed-in user, translating :class:`entra_mw.WebSignIn`
(which decides everything) into Starlette.

::

    from starlette.applications import Starlette
    from entra_mw import EntraAuth, EntraConfig, WebSignIn
    from entra_mw.contrib.starlette import SignInRoutes

    auth = EntraAuth(EntraConfig.from_env())
    web = SignInRoutes(WebSignIn(auth, scopes=["api://weather/Weather.Read"]))

    @web.login_required
    async def home(request):
        user = await web.user(request)
        header = await web.authorization_header(request, ["api://weather/Weather.Read"])
        ...

    app = Starlette(routes=[Route("/", home), web.mount])
    web.install(app)       # a session that can no longer get tokens silently → sign in again

FastAPI: ``app.include_router``-free — ``app.router.routes.append(web.mount)`` (or ``web.install(app)``, which does
that too) and ``user: Annotated[User, Depends(web.required_user)]`` (``web.current_user`` gives the anonymous
user instead of a redirect).

Routes (under ``url_prefix``, ``/auth`` by default): ``GET login?next=/path``, ``GET|POST callback`` (the redirect
URI to register: ``…/auth/callback``), ``POST logout`` (from this app's own pages only; a GET is 405).
The request's user is kept at ``scope["entra_mw.user"]``.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from .._downstream import Downstream
from .._signin import (
    PENDING_COOKIE,
    SESSION_COOKIE,
    SignInRequired,
    User,
    WebSignIn,
    error_page,
    safe_next,
    same_origin,
)
from ..errors import EntraError

__all__ = ["SignInRoutes"]

_USER_KEY = "entra_mw.user"
_MAX_FORM = 64 * 1024
Endpoint = Callable[[Request], Awaitable[Response]]


class SignInRoutes:
    """Web sign-in for one Starlette or FastAPI app. ``after_logout``: the path of this app Entra sends the
    browser back to after sign-out (register ``{origin}{after_logout}`` as a redirect URI too)."""

    def __init__(self, signin: WebSignIn, *, url_prefix: str = "/auth", after_logout: str = "/") -> None:
        if not isinstance(signin, WebSignIn):
            raise TypeError("SignInRoutes needs a WebSignIn")
        prefix = url_prefix.rstrip("/")
        if not prefix.startswith("/") or safe_next(prefix, "") != prefix:
            raise ValueError(f"url_prefix must be a path such as '/auth', got {url_prefix!r}")
        self.signin = signin
        self.url_prefix = prefix
        self.after_logout = safe_next(after_logout)
        #: The routes to add to the app (``Starlette(routes=[..., web.mount])``).
        self.mount = Mount(
            prefix,
            name="entra_mw_signin",
            routes=[
                Route("/login", self._login, methods=["GET"], name="login"),
                Route("/callback", self._callback, methods=["GET", "POST"], name="callback"),
                Route("/logout", self._logout, methods=["POST"], name="logout"),
            ],
        )

    def install(self, app: Starlette) -> None:
        """Add the routes (unless already there) and turn :class:`~entra_mw.SignInRequired` raised by any
        endpoint into a new sign-in that comes back to the page."""
        if self.mount not in app.router.routes:
            app.router.routes.append(self.mount)
        app.add_exception_handler(SignInRequired, self._sign_in_again)

    # -- the signed-in user ----------------------------------------------------------------------------------

    async def user(self, conn: HTTPConnection) -> User:
        """The signed-in :class:`~entra_mw.User` of this request, or the anonymous one (``if user:``)."""
        user = conn.scope.get(_USER_KEY)
        if not isinstance(user, User):
            user = await self.signin.auser(conn.cookies.get(SESSION_COOKIE))
            conn.scope[_USER_KEY] = user
        return user

    async def current_user(self, request: Request) -> User:
        """FastAPI dependency: the signed-in user, or the anonymous one."""
        return await self.user(request)

    async def required_user(self, request: Request) -> User:
        """FastAPI dependency: the signed-in user; raises :class:`~entra_mw.SignInRequired` (which
        :meth:`install`'s handler turns into a sign-in that comes back) when there is none."""
        user = await self.user(request)
        if not user:
            raise SignInRequired("Sign in first.", reason="no_session")
        return user

    async def authorization_header(self, conn: HTTPConnection, scopes: Sequence[str]) -> str:
        """``"Bearer …"`` for the signed-in user and ``scopes`` (silently refreshed, off the event loop).
        Raises :class:`~entra_mw.SignInRequired`."""
        return await self.signin.aauthorization_header(conn.cookies.get(SESSION_COOKIE), scopes=scopes)

    async def downstream(self, conn: HTTPConnection) -> Downstream:
        """A :class:`~entra_mw.Downstream` acting for the signed-in user (delegated tokens from the session,
        through the engine's token cache): ``await (await web.downstream(request)).acall("weather", "today")``.
        Raises :class:`~entra_mw.SignInRequired` when nobody is signed in."""
        if not await self.user(conn):
            raise SignInRequired("Sign in first.", reason="no_session")
        return await self.signin.adownstream(conn.cookies.get(SESSION_COOKIE))

    def login_required(self, endpoint: Endpoint) -> Endpoint:
        """Send browsers with no signed-in user to sign in, then back; also when the endpoint finds the session
        can no longer get tokens silently."""

        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            if not await self.user(request):
                return self._to_login(request)
            try:
                return await endpoint(request)
            except SignInRequired:
                return self._to_login(request)

        return wrapper

    # -- routes ----------------------------------------------------------------------------------------------

    def _to_login(self, request: Request) -> Response:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = f"{self.url_prefix}/login?" + urllib.parse.urlencode({"next": safe_next(path)})
        return _no_store(RedirectResponse(target, status_code=302))

    async def _sign_in_again(self, conn: HTTPConnection, exc: Exception) -> Response:
        if isinstance(conn, Request):
            return self._to_login(conn)
        return _error_page(SignInRequired("Sign in first.", reason="no_session"))

    async def _login(self, request: Request) -> Response:
        try:
            start = await self.signin.astart(
                redirect_uri=str(request.url_for("entra_mw_signin:callback")),
                next_path=request.query_params.get("next"),
                login_hint=request.query_params.get("login_hint") or None,
            )
        except EntraError as exc:
            return _error_page(exc)
        response = RedirectResponse(start.url, status_code=302)
        _set_cookie(response, PENDING_COOKIE, start.pending_id, self.signin.pending_cookie(request.headers.get("host")))
        return _no_store(response)

    async def _callback(self, request: Request) -> Response:
        if request.method == "POST":
            params = await _form(request)
        else:
            params = dict(request.query_params)
        response: Response
        try:
            done = await self.signin.afinish(request.cookies.get(PENDING_COOKIE), params)
        except EntraError as exc:
            response = _error_page(exc)
        else:
            old = request.cookies.get(SESSION_COOKIE)
            if old:
                # A new session id at every sign-in; the browser's previous session is ended (no fixation).
                await self.signin.asign_out(old)
            response = RedirectResponse(done.next_path, status_code=303)
            _set_cookie(
                response, SESSION_COOKIE, done.session_id, self.signin.session_cookie(request.headers.get("host"))
            )
        _delete_cookie(response, PENDING_COOKIE, self.signin.pending_cookie(request.headers.get("host")))
        return _no_store(response)

    async def _logout(self, request: Request) -> Response:
        host = request.headers.get("host")
        if not same_origin(
            host=host, origin=request.headers.get("origin"), fetch_site=request.headers.get("sec-fetch-site")
        ):
            return _no_store(PlainTextResponse("Sign-out must come from this site.", status_code=403))
        back = str(request.base_url).rstrip("/") + self.after_logout
        url = await self.signin.asign_out(request.cookies.get(SESSION_COOKIE), post_logout_redirect_uri=back)
        response = RedirectResponse(url, status_code=303)
        _delete_cookie(response, SESSION_COOKIE, self.signin.session_cookie(host))
        return _no_store(response)


async def _form(request: Request) -> dict[str, str]:
    # The answer is a small urlencoded form (form_post); read it without a multipart parser, capped.
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            return {}
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=False, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return {}
    return dict(pairs)


def _set_cookie(response: Response, name: str, value: str, attrs: dict[str, Any]) -> None:
    response.set_cookie(
        name,
        value,
        max_age=attrs["max_age"],
        path=attrs["path"],
        secure=attrs["secure"],
        httponly=attrs["httponly"],
        samesite=attrs["samesite"].lower(),
    )


def _delete_cookie(response: Response, name: str, attrs: dict[str, Any]) -> None:
    response.delete_cookie(
        name, path=attrs["path"], secure=attrs["secure"], httponly=True, samesite=attrs["samesite"].lower()
    )


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(exc: EntraError) -> Response:
    return _no_store(HTMLResponse(error_page(exc), status_code=exc.status_code))
