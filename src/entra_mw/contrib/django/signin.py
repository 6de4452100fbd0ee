"""Web sign-in for Django: the ``login``/``callback``/``logout`` views, ``login_required`` for sync and async
views, and the signed-in user, translating :class:`entra_mw.WebSignIn` (which decides everything) into Django.

``settings.py``::

    INSTALLED_APPS = [..., "entra_mw.contrib.django"]
    ENTRA_MW = "env"                                          # the engine, as for the API side
    ENTRA_MW_SIGNIN = {"scopes": ["api://weather/Weather.Read"], "after_logout": "/"}

``urls.py``::

    urlpatterns = [..., path("auth/", include("entra_mw.contrib.django.signin_urls"))]

``views.py``::

    from entra_mw.contrib.django.signin import authorization_header, get_user, login_required

    @login_required
    def forecast(request):
        user = get_user(request)
        header = authorization_header(request, ["api://weather/Weather.Read"])
        ...

``ENTRA_MW_SIGNIN`` takes ``scopes``, ``after_logout`` (a path of this site), ``response_mode``, ``session_ttl``,
``pending_ttl`` and ``store`` (:class:`WebSignIn`'s arguments), or a ``WebSignIn``; it is read at use time, so
``override_settings`` works. The callback is the redirect URI to register (``…/auth/callback``); it is exempt
from Django's CSRF check because Entra's page posts it (the pending cookie and ``state`` bind it to the browser
instead). Logout is a POST from this site (Django's CSRF check applies, and ``Origin`` is checked too).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from ..._downstream import Downstream
from ..._signin import (
    PENDING_COOKIE,
    SESSION_COOKIE,
    SignInRequired,
    SignInSettings,
    User,
    WebSignIn,
    error_page,
    safe_next,
    same_origin,
    sign_in_from_settings,
)
from ...errors import ConfigurationError, EntraError
from .conf import get_auth

__all__ = [
    "SETTING",
    "aauthorization_header",
    "aget_downstream",
    "aget_user",
    "authorization_header",
    "callback",
    "get_downstream",
    "get_sign_in",
    "get_user",
    "login",
    "login_required",
    "logout",
]

SETTING = "ENTRA_MW_SIGNIN"
_URLS = "entra_mw_signin"
_USER_ATTRIBUTE = "_entra_mw_user"
_V = TypeVar("_V", bound=Callable[..., Any])

_lock = threading.Lock()
_built: dict[str, Any] = {}


def _settings() -> SignInSettings:
    auth = get_auth()
    with _lock:
        cached = _built.get("settings")
        if cached is not None and _built.get("auth") is auth:
            return cast("SignInSettings", cached)
    value = getattr(settings, SETTING, None)
    built = sign_in_from_settings(auth, value, name=SETTING)
    if built is None:
        raise ConfigurationError(f"web sign-in needs {SETTING} (a mapping with 'scopes', or a WebSignIn)", key=SETTING)
    with _lock:
        _built.update(settings=built, auth=auth)
    return built


def _reset(*, setting: str, **_: Any) -> None:
    if setting.startswith("ENTRA_MW"):
        with _lock:
            _built.clear()


setting_changed.connect(_reset, dispatch_uid="entra_mw.contrib.django.signin")


def get_sign_in() -> WebSignIn:
    """The :class:`~entra_mw.WebSignIn` ``ENTRA_MW_SIGNIN`` describes, on the integration's engine."""
    return _settings().sign_in


# -- the signed-in user ---------------------------------------------------------------------------------------


def get_user(request: HttpRequest) -> User:
    """The signed-in :class:`~entra_mw.User` of this request, or the anonymous one (``if user:``)."""
    user = request.__dict__.get(_USER_ATTRIBUTE)
    if not isinstance(user, User):
        user = get_sign_in().user(request.COOKIES.get(SESSION_COOKIE))
        request.__dict__[_USER_ATTRIBUTE] = user
    return user


async def aget_user(request: HttpRequest) -> User:
    """Async twin of :func:`get_user`."""
    user = request.__dict__.get(_USER_ATTRIBUTE)
    if not isinstance(user, User):
        signin = await sync_to_async(get_sign_in)()
        user = await signin.auser(request.COOKIES.get(SESSION_COOKIE))
        request.__dict__[_USER_ATTRIBUTE] = user
    return user


def authorization_header(request: HttpRequest, scopes: Sequence[str]) -> str:
    """``"Bearer …"`` for the signed-in user and ``scopes`` (silently refreshed). Raises
    :class:`~entra_mw.SignInRequired`, which :func:`login_required` turns into a new sign-in."""
    return get_sign_in().authorization_header(request.COOKIES.get(SESSION_COOKIE), scopes=scopes)


async def aauthorization_header(request: HttpRequest, scopes: Sequence[str]) -> str:
    """Async twin of :func:`authorization_header` (MSAL runs off the event loop)."""
    signin = await sync_to_async(get_sign_in)()
    return await signin.aauthorization_header(request.COOKIES.get(SESSION_COOKIE), scopes=scopes)


def get_downstream(request: HttpRequest) -> Downstream:
    """A :class:`~entra_mw.Downstream` acting for the signed-in user (delegated tokens from the session,
    through the engine's token cache). Raises :class:`~entra_mw.SignInRequired` when nobody is signed in."""
    if not get_user(request):
        raise SignInRequired("Sign in first.", reason="no_session")
    return get_sign_in().downstream(request.COOKIES.get(SESSION_COOKIE))


async def aget_downstream(request: HttpRequest) -> Downstream:
    """Async twin of :func:`get_downstream`."""
    if not await aget_user(request):
        raise SignInRequired("Sign in first.", reason="no_session")
    signin = await sync_to_async(get_sign_in)()
    return await signin.adownstream(request.COOKIES.get(SESSION_COOKIE))


def _to_login(request: HttpRequest) -> HttpResponse:
    target = safe_next(request.get_full_path())
    response = HttpResponseRedirect(reverse(f"{_URLS}:login") + "?" + urlencode({"next": target}))
    return _no_store(response)


def login_required(view: _V) -> _V:
    """Send browsers with no signed-in user to sign in, then back to this page; also when the view finds the
    session can no longer get tokens silently. Works on sync and async views."""
    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            if not await aget_user(request):
                return _to_login(request)
            try:
                return await view(request, *args, **kwargs)
            except SignInRequired:
                return _to_login(request)

        return cast("_V", async_wrapper)

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if not get_user(request):
            return _to_login(request)
        try:
            return view(request, *args, **kwargs)
        except SignInRequired:
            return _to_login(request)

    return cast("_V", wrapper)


# -- views ----------------------------------------------------------------------------------------------------


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


def _error_page(exc: EntraError) -> HttpResponse:
    response = HttpResponse(error_page(exc), status=exc.status_code, content_type="text/html; charset=utf-8")
    return _no_store(response)


def _set_cookie(response: HttpResponse, name: str, value: str, attrs: dict[str, Any]) -> None:
    response.set_cookie(
        name,
        value,
        max_age=attrs["max_age"],
        path=attrs["path"],
        secure=attrs["secure"],
        httponly=attrs["httponly"],
        samesite=attrs["samesite"],
    )


def _delete_cookie(response: HttpResponse, name: str, attrs: dict[str, Any]) -> None:
    response.delete_cookie(name, path=attrs["path"], samesite=attrs["samesite"])


def login(request: HttpRequest) -> HttpResponse:
    """``GET …/login?next=/path``: start a sign-in and send the browser to Entra."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    signin = get_sign_in()
    try:
        start = signin.start(
            redirect_uri=request.build_absolute_uri(reverse(f"{_URLS}:callback")),
            next_path=request.GET.get("next"),
            login_hint=request.GET.get("login_hint") or None,
        )
    except EntraError as exc:
        return _error_page(exc)
    response = HttpResponseRedirect(start.url)
    _set_cookie(response, PENDING_COOKIE, start.pending_id, signin.pending_cookie(request.get_host()))
    return _no_store(response)


@csrf_exempt
def callback(request: HttpRequest) -> HttpResponse:
    """``GET|POST …/callback``: the redirect URI. Finishes the sign-in and starts a new session."""
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    signin = get_sign_in()
    params = request.POST if request.method == "POST" else request.GET
    response: HttpResponse
    try:
        done = signin.finish(request.COOKIES.get(PENDING_COOKIE), params.dict())
    except EntraError as exc:
        response = _error_page(exc)
    else:
        old = request.COOKIES.get(SESSION_COOKIE)
        if old:
            # A new session id at every sign-in; the browser's previous session is ended (no fixation).
            signin.sign_out(old)
        response = HttpResponseRedirect(done.next_path)
        response.status_code = 303  # after a POST: the next request is a GET
        _set_cookie(response, SESSION_COOKIE, done.session_id, signin.session_cookie(request.get_host()))
    _delete_cookie(response, PENDING_COOKIE, signin.pending_cookie(request.get_host()))
    return _no_store(response)


def logout(request: HttpRequest) -> HttpResponse:
    """``POST …/logout``: end the session here and at Entra."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    state = _settings()
    host = request.get_host()
    if not same_origin(
        host=host, origin=request.headers.get("Origin"), fetch_site=request.headers.get("Sec-Fetch-Site")
    ):
        return _no_store(HttpResponse("Sign-out must come from this site.", status=403, content_type="text/plain"))
    back = request.build_absolute_uri(state.after_logout)
    url = state.sign_in.sign_out(request.COOKIES.get(SESSION_COOKIE), post_logout_redirect_uri=back)
    response = HttpResponseRedirect(url)
    response.status_code = 303
    _delete_cookie(response, SESSION_COOKIE, state.sign_in.session_cookie(host))
    return _no_store(response)
