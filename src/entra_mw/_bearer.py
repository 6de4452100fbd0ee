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
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from .errors import InvalidRequest, MissingToken

__all__ = ["Authorization", "authorization_from_scope", "bearer_token", "token_from"]

#: What an adapter hands the engine: the ``Authorization`` value a request carried, every value when it carried
#: several, or ``None``.
Authorization = str | bytes | Sequence[str | bytes] | None

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


def token_from(authorization: Authorization, query: object = None) -> str:
    """The bearer token given what any framework can hand over: one ``Authorization`` value, a sequence of
    every value the request carried, or ``None``; and the raw query string (str or bytes) or ``None``."""
    if authorization is None:
        return _finish(None, 0, query, False)
    if isinstance(authorization, str | bytes):
        return _finish(authorization, 1, query, False)
    values = list(authorization)
    return _finish(values[0] if values else None, len(values), query, False)


def authorization_from_scope(scope: Mapping[str, Any]) -> Authorization:
    """The ``Authorization`` value(s) of an ASGI scope (header names are lower-case bytes; some servers keep
    the case they received, so a 13-byte name is compared case-insensitively)."""
    value: bytes | None = None
    extra: list[bytes] | None = None
    for name, raw in scope.get("headers", ()):
        if name == _AUTHORIZATION or (len(name) == 13 and name.lower() == _AUTHORIZATION):
            if value is None:
                value = raw
            elif extra is None:
                extra = [value, raw]
            else:
                extra.append(raw)
    return value if extra is None else extra
