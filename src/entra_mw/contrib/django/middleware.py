"""``EntraMiddleware``: authenticates each request's bearer token and attaches ``request.entra``.

A request **without** a token goes on with an anonymous context (``request.entra.principal is None``), so one
middleware serves public pages, the admin and protected views alike; views say what they need with
:func:`~entra_mw.contrib.django.require` or DRF permissions. A request that **sends** a token has it checked
here: a malformed, invalid or expired one is refused (400/401 with the RFC 6750 challenge), and 503 when the
signing keys cannot be had. The decisions are :meth:`EntraAuth.authenticate`'s; this module only translates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from ..._bearer import Authorization, authorization_from_scope
from ..._context import AuthContext
from ...errors import ConfigurationError, EntraError
from .conf import get_auth, get_middleware_settings

__all__ = [
    "ATTRIBUTE",
    "EntraMiddleware",
    "aget_context_or_authenticate",
    "error_response",
    "get_context",
    "get_context_or_authenticate",
]

#: The request attribute the context lives in: ``request.entra``.
ATTRIBUTE = "entra"


def get_context(request: HttpRequest) -> AuthContext:
    """``request.entra``, typed: the :class:`~entra_mw.AuthContext` of this request (``principal`` is ``None``
    for an anonymous one). Raises ``LookupError`` when nothing authenticated the request.

    ::

        principal = get_context(request).principal
    """
    ctx = getattr(request, ATTRIBUTE, None)
    if not isinstance(ctx, AuthContext):
        raise LookupError(
            "this request has no entra_mw context: add 'entra_mw.contrib.django.EntraMiddleware' to MIDDLEWARE "
            "or protect the view with entra_mw.contrib.django.require"
        )
    return ctx


def error_response(exc: EntraError) -> HttpResponse:
    """The answer an error renders itself as: its status, headers (the challenge, ``Retry-After``) and JSON body."""
    response = HttpResponse(exc.body(), status=exc.status_code)
    for name, value in exc.headers():
        response[name] = value
    return response


def _authorization(request: HttpRequest) -> Authorization:
    # Under ASGI the scope keeps every Authorization header apart; WSGI servers fold repeats into one value.
    scope = request.__dict__.get("scope")  # ASGIRequest's; a dict lookup, not a failing getattr, on WSGI
    if isinstance(scope, Mapping):
        return authorization_from_scope(scope)
    value: str | None = request.META.get("HTTP_AUTHORIZATION")
    return value


def get_context_or_authenticate(request: HttpRequest, *, required: bool = False) -> AuthContext:
    """``request.entra`` when the middleware ran, else authenticate the request now (and attach the context).
    Raises :class:`~entra_mw.EntraError` for a token that is sent but refused, or missing when ``required``."""
    ctx = request.__dict__.get(ATTRIBUTE)
    if isinstance(ctx, AuthContext):
        return ctx
    ctx = get_auth().authenticate(_authorization(request), query=request.META.get("QUERY_STRING"), required=required)
    request.__dict__[ATTRIBUTE] = ctx
    return ctx


async def aget_context_or_authenticate(request: HttpRequest, *, required: bool = False) -> AuthContext:
    """Async twin of :func:`get_context_or_authenticate`: key fetches do not block the event loop."""
    ctx = request.__dict__.get(ATTRIBUTE)
    if isinstance(ctx, AuthContext):
        return ctx
    ctx = await get_auth().aauthenticate(
        _authorization(request), query=request.META.get("QUERY_STRING"), required=required
    )
    request.__dict__[ATTRIBUTE] = ctx
    return ctx


def _required(request: HttpRequest) -> bool:
    options = get_middleware_settings()
    return options.required and request.path_info not in options.exclude_paths


class EntraMiddleware:
    """Attach ``request.entra`` (an :class:`~entra_mw.AuthContext`: ``.principal``, a lazily built
    ``.downstream``) to every request; refuse a token that is sent but not valid. Sync- and async-capable: it
    runs in whichever mode the handler runs, so an ASGI deployment never switches threads for it.

    ``settings.py``::

        INSTALLED_APPS = [..., "entra_mw.contrib.django"]
        MIDDLEWARE = [..., "entra_mw.contrib.django.EntraMiddleware"]
        ENTRA_MW = {"tenant_id": "...", "client_id": "..."}      # or "env"

    ``ENTRA_MW_REQUIRED = True`` makes it answer requests without a token with 401 too, except under
    ``ENTRA_MW_EXCLUDE_PATHS`` (``["/healthz", "/static/*"]``); a token that is sent must be valid everywhere.

    It also renders any :class:`~entra_mw.EntraError` a view lets escape (``InsufficientScope`` raised by hand,
    a ``TokenAcquisitionError`` or ``DownstreamCallError`` from ``request.entra.downstream``) as that error's own
    answer; ``ConfigurationError`` is left to Django (a server bug, not a client's).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        try:
            get_context_or_authenticate(request, required=_required(request))
        except ConfigurationError:
            raise
        except EntraError as exc:
            return error_response(exc)
        response: HttpResponseBase = self.get_response(request)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            await aget_context_or_authenticate(request, required=_required(request))
        except ConfigurationError:
            raise
        except EntraError as exc:
            return error_response(exc)
        response: HttpResponseBase = await self.get_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, EntraError) and not isinstance(exception, ConfigurationError):
            return error_response(exception)
        return None
