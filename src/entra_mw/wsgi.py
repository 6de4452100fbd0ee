"""``EntraWSGIMiddleware``: WSGI middleware that validates bearer tokens for any WSGI framework (PEP 3333).

::

    from entra_mw import EntraAuth, EntraConfig
    from entra_mw.wsgi import EntraWSGIMiddleware, get_context

    auth = EntraAuth(EntraConfig.from_env())
    app.wsgi_app = EntraWSGIMiddleware(app.wsgi_app, auth=auth, exclude_paths=["/healthz"])  # Flask

    principal = get_context(request.environ).principal                                     # in a view

A request that passes gets an :class:`~entra_mw.AuthContext` at ``environ["entra_mw"]``; one that does not is
answered by the middleware itself (400/401/403/503 with the RFC 6750 challenge) and never reaches the app. The
decisions are :meth:`EntraAuth.authenticate`'s; this module only translates WSGI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Protocol, TypeAlias

from ._context import AuthContext
from ._middleware import MiddlewareOptions
from .errors import EntraError

__all__ = ["ENVIRON_KEY", "EntraWSGIMiddleware", "get_context"]

Environ: TypeAlias = dict[str, Any]
StartResponse: TypeAlias = Callable[..., Any]
WSGIApp: TypeAlias = Callable[[Environ, StartResponse], Iterable[bytes]]

#: The slot every adapter reads: ``environ["entra_mw"]``.
ENVIRON_KEY = "entra_mw"


class _HasEnviron(Protocol):
    @property
    def environ(self) -> Mapping[str, Any]: ...


def get_context(request: Mapping[str, Any] | _HasEnviron) -> AuthContext:
    """The :class:`~entra_mw.AuthContext` the middleware attached, from a WSGI environ or any object with an
    ``.environ`` (Flask's and Werkzeug's ``request``). Typed, so ``mypy`` knows ``principal`` may be ``None``.
    Raises ``LookupError`` when no ``EntraWSGIMiddleware`` ran for this request."""
    environ = request if isinstance(request, Mapping) else request.environ
    ctx = environ.get(ENVIRON_KEY)
    if not isinstance(ctx, AuthContext):
        raise LookupError("this request has no entra_mw context: is entra_mw.wsgi.EntraWSGIMiddleware installed?")
    return ctx


class EntraWSGIMiddleware(MiddlewareOptions[WSGIApp]):
    """Authenticate every request with a bearer token; WSGI twin of :class:`entra_mw.asgi.EntraMiddleware`
    (same options: ``required``, ``exclude_paths`` matched against ``PATH_INFO``, ``requirement``,
    ``challenge``).

    Servers fold repeated ``Authorization`` headers into one comma-separated value; one that holds two
    credentials is refused with 400.
    """

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self.exclude_paths and environ.get("PATH_INFO") in self.exclude_paths:
            environ[ENVIRON_KEY] = AuthContext(self.auth, None, None)
            return self.app(environ, start_response)
        try:
            ctx = self.auth.authenticate(
                environ.get("HTTP_AUTHORIZATION"),
                query=environ.get("QUERY_STRING"),
                required=self.required,
                requirement=self.requirement,
                challenge=self.challenge,
            )
        except EntraError as exc:
            return _deny(exc, start_response)
        environ[ENVIRON_KEY] = ctx
        return self.app(environ, start_response)


def _status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Error"


def _deny(exc: EntraError, start_response: StartResponse) -> list[bytes]:
    body = exc.body()
    headers = [*exc.headers(), ("Content-Length", str(len(body)))]
    start_response(_status_line(exc.status_code), headers)
    return [body]
