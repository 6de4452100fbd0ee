"""``EntraWSGIMiddleware``: WSGI middleware that validates bearer tokens for any WSGI framework (PEP 3333).

::

    from entra_mw import EntraAuth, EntraConfig
    from entra_mw.wsgi import EntraWSGIMiddleware

    auth = EntraAuth(EntraConfig.from_env())
    app.wsgi_app = EntraWSGIMiddleware(app.wsgi_app, auth=auth, exclude_paths=["/healthz"])  # Flask

A request that passes gets an :class:`~entra_mw.AuthContext` at ``environ["entra_mw"]``; one that does not is
answered by the middleware itself (400/401/403/503 with the RFC 6750 challenge) and never reaches the app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, TypeAlias

from ._bearer import MiddlewareOptions, bearer_from_environ
from ._context import AuthContext
from .errors import AuthError, MissingToken, ProviderUnavailable

__all__ = ["EntraWSGIMiddleware"]

Environ: TypeAlias = dict[str, Any]
StartResponse: TypeAlias = Callable[..., Any]
WSGIApp: TypeAlias = Callable[[Environ, StartResponse], Iterable[bytes]]

#: The slot every adapter reads: ``environ["entra_mw"]``.
ENVIRON_KEY = "entra_mw"


class EntraWSGIMiddleware(MiddlewareOptions[WSGIApp]):
    """Authenticate every request with a bearer token; WSGI twin of :class:`entra_mw.asgi.EntraMiddleware`.

    - ``required=True``: no token → 401 with a bare ``Bearer`` challenge. ``required=False``: no token → the
      app runs with an anonymous ``AuthContext``; a token that *is* sent must still be valid.
    - ``exclude_paths``: exact paths (``"/healthz"``) or subtrees (``"/public/*"``, which also matches
      ``/public``), matched against ``PATH_INFO``; they get an anonymous ``AuthContext``.
    - ``requirement``: a :class:`~entra_mw.Requirement` every authenticated request must meet, else 403.

    Servers fold repeated ``Authorization`` headers into one comma-separated value; one that holds two
    credentials is refused with 400.
    """

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        auth = self.auth
        if self.exclude_paths and environ.get("PATH_INFO") in self.exclude_paths:
            environ[ENVIRON_KEY] = AuthContext(auth, None, None)
            return self.app(environ, start_response)
        try:
            token = bearer_from_environ(environ)
        except MissingToken as exc:
            if self.required:
                return _deny(exc, start_response)
            environ[ENVIRON_KEY] = AuthContext(auth, None, None)
            return self.app(environ, start_response)
        except AuthError as exc:
            return _deny(exc, start_response)
        try:
            principal = auth.validate(token)
            if self.requirement is not None:
                self.requirement.check(principal)
        except (AuthError, ProviderUnavailable) as exc:
            return _deny(exc, start_response)
        environ[ENVIRON_KEY] = AuthContext(auth, principal, token)
        return self.app(environ, start_response)


def _status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Error"


def _deny(exc: AuthError | ProviderUnavailable, start_response: StartResponse) -> list[bytes]:
    body = exc.body()
    headers = [*exc.headers(), ("Content-Length", str(len(body)))]
    start_response(_status_line(exc.status_code), headers)
    return [body]
