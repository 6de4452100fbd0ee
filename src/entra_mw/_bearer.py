"""Find the bearer token in a request, framework-free (RFC 6750 §2).

Only the ``Authorization: Bearer <token>`` header method (§2.1) is accepted; the scheme is matched
case-insensitively (RFC 9110 §11.1). Outcomes:

- no ``Authorization`` header, an empty one, or another scheme (``Basic``, ``Negotiate`` ...):
  ``MissingToken``, 401 with a bare challenge (§3.1: no ``error`` code when authentication is simply absent);
- two ``Authorization`` headers, or one value holding two credentials (servers fold duplicates into ``a, b``):
  ``InvalidRequest`` (400);
- ``Bearer`` with no token, spaces inside it, or characters outside ``b64token`` (§2.1): ``InvalidRequest``;
- an ``access_token`` query parameter (§2.3) or form field (§2.2), with or without a header:
  ``InvalidRequest``. Tokens in URLs end up in logs, and two methods at once is §3.1 ``invalid_request``.

The request body is never read (a middleware cannot buffer arbitrary uploads); callers that have already
parsed a form pass ``form_token=True``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import unquote_to_bytes

from ._engine import EntraAuth
from ._requirements import Requirement
from .errors import ConfigurationError, InvalidRequest, MissingToken

__all__ = ["MiddlewareOptions", "PathExclusions", "bearer_from_environ", "bearer_from_scope", "bearer_token"]

_App = TypeVar("_App")

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"
# Second credentials inside one folded header value: ", <scheme> <something>" (RFC 9110 §11.4). Auth-params of
# schemes such as Digest (``, realm="x"``) never have a space right after the name, so they do not match.
_SECOND_CREDENTIALS = re.compile(rb",[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+[ \t]+[^ \t,=]")

_AUTHORIZATION = b"authorization"
_BEARER = b"bearer"


def _missing() -> MissingToken:
    return MissingToken("A bearer token is required.", reason="missing_token")


def _two_credentials() -> InvalidRequest:
    return InvalidRequest(
        "The request carries more than one Authorization credential.", reason="duplicate_authorization"
    )


def _as_bytes(value: object) -> bytes:
    # ASGI gives bytes; WSGI gives latin-1-decoded str (PEP 3333). Anything a str cannot carry as latin-1 is
    # replaced, and then refused as malformed.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1", "replace")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode("latin-1", "replace")


def _query_has_token(raw: bytes) -> bool:
    """True when the query string carries an ``access_token`` parameter (RFC 6750 §2.3), however encoded."""
    # Fast path: nearly every request has neither the name nor an escape that could spell it.
    if b"access" not in raw and b"%" not in raw:
        return False
    for pair in raw.split(b"&"):
        name = pair.partition(b"=")[0]
        if b"%" in name:
            name = unquote_to_bytes(name)
        if name == b"access_token":
            return True
    return False


def _parse(value: bytes) -> str:
    """The token of one ``Authorization`` header value, or the error that value deserves."""
    # RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=". Deleting the
    # allowed characters is several times cheaper than a regular expression over a 1-2 KB token.
    if value[:7].lower() == b"bearer ":  # the common case, taken without extra copies
        token = value[7:]
        body = token.rstrip(b"=")
        # A leading space stays in ``body`` and fails the character check; ``body`` may not be empty (1*).
        if body and not body.translate(None, _B64TOKEN_CHARS):
            return token.decode("ascii")
    value = value.strip(b" \t")
    scheme, _, rest = value.partition(b" ")
    if len(scheme) != 6 or scheme.lower() != _BEARER:
        if b"," in value and _SECOND_CREDENTIALS.search(value) is not None:
            raise _two_credentials()
        # Another scheme, or no credentials at all: RFC 6750 §3.1 says answer with a bare challenge.
        raise _missing()
    token = rest.lstrip(b" ")
    body = token.rstrip(b"=")
    if body and not body.translate(None, _B64TOKEN_CHARS):
        return token.decode("ascii")
    if not token:
        raise InvalidRequest("The Bearer credentials are empty.", reason="empty_token")
    if b"," in token and _SECOND_CREDENTIALS.search(token) is not None:
        raise _two_credentials()
    raise InvalidRequest("The Bearer credentials are malformed.", reason="malformed_authorization")


def _finish(value: object, count: int, query: object, form_token: bool) -> str:
    if count > 1:
        raise InvalidRequest(
            "The request carries more than one Authorization header.", reason="duplicate_authorization"
        )
    if form_token or (query and _query_has_token(_as_bytes(query))):
        # §2.2/§2.3 are not supported; with a header as well it is "more than one method" (§3.1).
        raise InvalidRequest(
            "Send the access token in the Authorization header only, not in the URL or the body.",
            reason="token_not_in_header",
        )
    if value is None:
        raise _missing()
    return _parse(_as_bytes(value))


def bearer_token(
    authorization: Sequence[str | bytes], query_string: str | bytes = b"", *, form_token: bool = False
) -> str:
    """The bearer token of a request, given every ``Authorization`` header value it carried (usually zero or
    one), its raw query string and whether its already-parsed form body holds an ``access_token`` field.

    Raises :class:`~entra_mw.errors.MissingToken` or :class:`~entra_mw.errors.InvalidRequest`; never anything
    else, whatever the input. Header bytes are read as latin-1 (RFC 9110 §5.5).

    ::

        token = bearer_token(request.headers.getlist("Authorization"), request.query_string)
    """
    return _finish(authorization[0] if authorization else None, len(authorization), query_string, form_token)


def bearer_from_scope(scope: Mapping[str, Any]) -> str:
    """The bearer token of an ASGI ``http`` or ``websocket`` scope (header names are lower-case bytes)."""
    value: bytes | None = None
    count = 0
    for name, raw in scope.get("headers", ()):
        if name == _AUTHORIZATION or (len(name) == 13 and name.lower() == _AUTHORIZATION):
            count += 1
            value = raw
    return _finish(value, count, scope.get("query_string"), False)


def bearer_from_environ(environ: Mapping[str, Any]) -> str:
    """The bearer token of a WSGI environ. Servers fold repeated headers into one comma-separated
    ``HTTP_AUTHORIZATION``; a folded value holding two credentials is refused with 400."""
    value = environ.get("HTTP_AUTHORIZATION")
    return _finish(value, 0 if value is None else 1, environ.get("QUERY_STRING"), False)


class PathExclusions:
    """``exclude_paths`` for the middleware: exact paths (``"/healthz"``) and subtrees (``"/public/*"``
    matches ``/public`` and everything below it). A path with a ``..`` or ``.`` segment never matches a
    subtree, so a router that normalises paths cannot be steered from an excluded prefix into a protected one.

    ::

        excluded = PathExclusions(["/healthz", "/public/*"])
        assert "/public/logo.png" in excluded and "/healthz/x" not in excluded
    """

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, paths: Iterable[str]) -> None:
        if isinstance(paths, str):
            paths = (paths,)
        exact: set[str] = set()
        prefixes: list[str] = []
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(f"exclude_paths entries must start with '/': {path!r}", key="exclude_paths")
            if path.endswith("/*"):
                base = path[:-2]
                if "*" in base:
                    raise ConfigurationError(f"'*' is only allowed as a final '/*': {path!r}", key="exclude_paths")
                exact.add(base or "/")
                prefixes.append(base + "/")
            elif "*" in path:
                raise ConfigurationError(f"'*' is only allowed as a final '/*': {path!r}", key="exclude_paths")
            else:
                exact.add(path)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)

    def __bool__(self) -> bool:
        return bool(self._exact)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        if path in self._exact:
            return True
        if self._prefixes and path.startswith(self._prefixes):
            return "/.." not in path and "/./" not in path and not path.endswith("/.")
        return False


class MiddlewareOptions(Generic[_App]):
    """What the ASGI and the WSGI middleware are built from, checked once at construction: the wrapped
    ``app``, the engine, ``required``, ``exclude_paths`` (a :class:`PathExclusions`) and ``requirement``.

    ::

        class EntraMiddleware(MiddlewareOptions[ASGIApp]): ...
        EntraMiddleware(app, auth=auth, exclude_paths=["/healthz"]).exclude_paths
    """

    def __init__(
        self,
        app: _App,
        *,
        auth: EntraAuth,
        required: bool = True,
        exclude_paths: Iterable[str] = (),
        requirement: Requirement | None = None,
    ) -> None:
        if not isinstance(auth, EntraAuth):
            raise TypeError(f"{type(self).__name__} needs auth=EntraAuth(...)")
        if requirement is not None and not isinstance(requirement, Requirement):
            raise TypeError("requirement must be an entra_mw.Requirement")
        self.app = app
        self.auth = auth
        self.required = required
        self.exclude_paths = PathExclusions(exclude_paths)
        self.requirement = requirement
