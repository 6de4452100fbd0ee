"""``require``: a view decorator that lets a request through only with a valid token that has the scopes or
app roles asked for — for sync and async function views and for class-based views."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest

from ..._requirements import Requirement
from ...errors import ConfigurationError, EntraError
from .middleware import aget_context_or_authenticate, error_response, get_context_or_authenticate

__all__ = ["require"]

_View = TypeVar("_View", bound=Callable[..., Any])


def _is_async(view: Callable[..., Any]) -> bool:
    if iscoroutinefunction(view):
        return True
    # method_decorator(require(...), name="dispatch") on a class-based view hands over its bound ``dispatch``
    # (in a partial); the view is async when its handlers are (Django's View.view_is_async).
    owner = getattr(getattr(view, "func", view), "__self__", None)
    return bool(getattr(owner, "view_is_async", False))


def require(
    *, scopes: Sequence[str] = (), roles: Sequence[str] = (), tenants: Sequence[str] | None = None
) -> Callable[[_View], _View]:
    """Let the request through only when it carries a valid token with one of ``scopes`` (delegated, ``scp``)
    or one of ``roles`` (app roles, ``roles``); neither given means any valid token. Otherwise the view is not
    called and the answer is 401 (no token: bare ``Bearer`` challenge), 403 ``insufficient_scope`` with
    ``scope="..."``, 400 or 503, as :class:`~entra_mw.EntraAuth` decides.

    ::

        @require(scopes=["Weather.Read"])
        def forecast(request): ...

        @require(roles=["Weather.Admin"])
        async def reset(request): ...

        @method_decorator(require(scopes=["Weather.Read"]), name="dispatch")
        class Forecast(View): ...

    Works without ``EntraMiddleware`` (it then authenticates the request itself); ``request.entra`` is set
    either way.
    """
    requirement = Requirement(scopes=scopes, roles=roles, tenants=tenants)

    def decorator(view: _View) -> _View:
        if _is_async(view):

            async def _async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                try:
                    ctx = await aget_context_or_authenticate(request)
                    ctx.require(requirement)
                except ConfigurationError:
                    raise
                except EntraError as exc:
                    return error_response(exc)
                return await view(request, *args, **kwargs)

            return cast("_View", functools.wraps(view)(_async_view))

        def _view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            try:
                ctx = get_context_or_authenticate(request)
                ctx.require(requirement)
            except ConfigurationError:
                raise
            except EntraError as exc:
                return error_response(exc)
            return view(request, *args, **kwargs)

        return cast("_View", functools.wraps(view)(_view))

    return decorator
