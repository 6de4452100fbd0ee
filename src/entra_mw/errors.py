"""Every error entra_mw raises, and how each one renders itself as an HTTP answer.

The tree::

    EntraError
    ├── AuthError                    an inbound request is refused; renders itself (status + WWW-Authenticate)
    │   ├── MissingToken             401, bare ``Bearer`` challenge, no ``error`` (RFC 6750 §3.1)
    │   ├── InvalidRequest           400 ``invalid_request`` (duplicate Authorization, token sent twice ...)
    │   ├── InvalidToken             401 ``invalid_token`` (signature, issuer, audience, lifetime ...)
    │   └── InsufficientScope        403 ``insufficient_scope`` with ``scope="..."``
    ├── ProviderUnavailable          503: no usable signing keys at all (discovery or JWKS unreachable)
    ├── TokenAcquisitionError        Entra refused or failed a token request (AADSTS codes, claims challenge)
    ├── DownstreamRequestError       400: a downstream call refused before sending (unsafe path or header)
    ├── DownstreamCallError          502/504: a downstream API unreachable, timed out or answered too much
    └── ConfigurationError           bad configuration, naming the key

Adapters never decide a status: they copy ``status_code``, ``headers()`` and ``body()`` into their framework's
response. Descriptions are safe to show a client: they never contain a token, an assertion or a secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "AuthError",
    "ConfigurationError",
    "DownstreamCallError",
    "DownstreamRequestError",
    "EntraError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "MissingToken",
    "ProviderUnavailable",
    "TokenAcquisitionError",
]

# RFC 6750 §3: auth-param values are quoted-strings; the error_description must be printable ASCII without '"'
# and '\'. We fold anything else to a space so a description can never break the header.
_UNSAFE_PARAM = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def _quote(value: str) -> str:
    return '"' + _UNSAFE_PARAM.sub(" ", value) + '"'


class EntraError(Exception):
    """Root of every entra_mw error."""


class _Renders(EntraError):
    """An error that knows its HTTP status, its RFC 6750 code and its ``WWW-Authenticate`` value."""

    status_code: int = 500
    error: str | None = None

    def __init__(
        self,
        description: str = "",
        *,
        reason: str | None = None,
        realm: str | None = None,
        resource_metadata: str | None = None,
        scope: Sequence[str] | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description or self.__class__.__name__)
        self.description = description
        #: A short machine-readable reason code for logs and metrics ("expired", "bad_audience", ...).
        self.reason = reason or self.__class__.__name__.lower()
        self.realm = realm
        self.resource_metadata = resource_metadata
        self.scope: tuple[str, ...] = tuple(scope or ())
        self.extra: dict[str, str] = dict(extra or {})

    def with_challenge(
        self, *, realm: str | None = None, resource_metadata: str | None = None, scope: Sequence[str] | None = None
    ) -> _Renders:
        """Return this error with challenge parameters filled in (used by adapters in MCP mode, for example)."""
        if realm is not None:
            self.realm = realm
        if resource_metadata is not None:
            self.resource_metadata = resource_metadata
        if scope is not None and not self.scope:
            self.scope = tuple(scope)
        return self

    @property
    def www_authenticate(self) -> str | None:
        """The ``WWW-Authenticate`` header value, or ``None`` for errors that carry no challenge."""
        params: list[tuple[str, str]] = []
        if self.realm:
            params.append(("realm", self.realm))
        if self.error:
            params.append(("error", self.error))
            if self.description:
                params.append(("error_description", self.description))
        if self.scope:
            params.append(("scope", " ".join(self.scope)))
        if self.resource_metadata:
            params.append(("resource_metadata", self.resource_metadata))
        params.extend(self.extra.items())
        if not params:
            return "Bearer"
        return "Bearer " + ", ".join(f"{k}={_quote(v)}" for k, v in params)

    def headers(self) -> list[tuple[str, str]]:
        """Response headers for this error, ``WWW-Authenticate`` first when there is one."""
        out: list[tuple[str, str]] = []
        challenge = self.www_authenticate
        if challenge is not None:
            out.append(("WWW-Authenticate", challenge))
        out.append(("Content-Type", "application/json"))
        out.append(("Cache-Control", "no-store"))
        return out

    def body_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error or "unauthorized"}
        if self.description:
            out["error_description"] = self.description
        if self.scope:
            out["scope"] = " ".join(self.scope)
        return out

    def body(self) -> bytes:
        """A small JSON body: ``{"error": ..., "error_description": ...}``."""
        return json.dumps(self.body_dict(), separators=(",", ":")).encode()


class AuthError(_Renders):
    """An inbound request was refused. Subclasses fix the status and the RFC 6750 code."""

    status_code = 401


class MissingToken(AuthError):
    """No bearer token was sent (or an unsupported scheme such as ``Basic``): 401 with a bare challenge.

    RFC 6750 §3.1: when the request lacks authentication information the server should not include an error code.
    """

    status_code = 401
    error = None

    def body_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": "unauthorized"}
        if self.description:
            out["error_description"] = self.description
        return out


class InvalidRequest(AuthError):
    """The request is malformed (two Authorization headers, a token sent in more than one way): 400."""

    status_code = 400
    error = "invalid_request"


class InvalidToken(AuthError):
    """The token is expired, revoked, malformed, or invalid for other reasons: 401 ``invalid_token``."""

    status_code = 401
    error = "invalid_token"


class InsufficientScope(AuthError):
    """A valid token lacks the scopes or app roles this resource needs: 403 ``insufficient_scope``.

    An application may raise it itself::

        if "Files.Write" not in principal.scopes:
            raise InsufficientScope(["Files.Write"])
    """

    status_code = 403
    error = "insufficient_scope"

    def __init__(
        self,
        scopes: Iterable[str] = (),
        description: str = "",
        *,
        reason: str | None = None,
        realm: str | None = None,
        resource_metadata: str | None = None,
    ) -> None:
        wanted = tuple(scopes)
        super().__init__(
            description or "The token does not grant the permissions this resource requires.",
            reason=reason or "insufficient_scope",
            realm=realm,
            resource_metadata=resource_metadata,
            scope=wanted,
        )


class ProviderUnavailable(_Renders):
    """No usable signing keys could be had (discovery or JWKS unreachable and nothing cached): 503."""

    status_code = 503
    error = "temporarily_unavailable"

    @property
    def www_authenticate(self) -> str | None:
        return None

    def headers(self) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Retry-After", "5")]


class TokenAcquisitionError(EntraError):
    """Entra refused a token request, or it could not be reached.

    Carries what a caller needs to react (never a token): ``error`` (``invalid_grant``, ``invalid_client``,
    ``interaction_required`` ...), ``suberror`` (``consent_required`` ...), the AADSTS ``error_codes``,
    ``correlation_id``, ``trace_id``, and ``claims`` (a claims challenge to send back to the user's client).
    ``status_code`` is the HTTP status to answer the *caller* with: 401/403 when the user must act (consent,
    MFA), 502 when Entra refused the app itself, 503/504 when Entra could not be reached.
    """

    def __init__(
        self,
        description: str,
        *,
        error: str | None = None,
        suberror: str | None = None,
        error_codes: Sequence[int] = (),
        correlation_id: str | None = None,
        trace_id: str | None = None,
        claims: str | None = None,
        http_status: int | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.error = error
        self.suberror = suberror
        self.error_codes: tuple[int, ...] = tuple(error_codes)
        self.correlation_id = correlation_id
        self.trace_id = trace_id
        self.claims = claims
        #: The HTTP status Entra answered with (``None`` when it could not be reached).
        self.http_status = http_status
        self.status_code = status_code if status_code is not None else self._default_status()

    def _default_status(self) -> int:
        if self.http_status is None:
            return 503
        if self.error == "interaction_required" or self.suberror == "consent_required" or self.claims:
            return 401
        if self.error in {"invalid_grant"} and 65001 in self.error_codes:
            return 403
        if self.http_status == 429 or self.http_status >= 500:
            return 503
        return 502

    @property
    def aadsts(self) -> str | None:
        """The first AADSTS code as ``"AADSTS65001"``, or ``None``."""
        return f"AADSTS{self.error_codes[0]}" if self.error_codes else None

    @property
    def www_authenticate(self) -> str | None:
        """A challenge for the caller when the user must act (consent, MFA, conditional access)."""
        if self.status_code not in (401, 403):
            return None
        params = [("error", "insufficient_claims" if self.claims else "invalid_token")]
        if self.description:
            params.append(("error_description", self.description))
        if self.claims:
            import base64

            params.append(("claims", base64.b64encode(self.claims.encode()).decode()))
        return "Bearer " + ", ".join(f"{k}={_quote(v)}" for k, v in params)

    def __repr__(self) -> str:
        return (
            f"TokenAcquisitionError(error={self.error!r}, suberror={self.suberror!r}, "
            f"error_codes={self.error_codes!r}, correlation_id={self.correlation_id!r})"
        )


class DownstreamRequestError(EntraError, ValueError):
    """A downstream request was refused before anything was sent: an unsafe path, query or header, or agent
    arguments that contradict each other. ``status_code`` is 400: the input is at fault.

    ::

        try:
            downstream.call("graph", user_supplied_path)
        except DownstreamRequestError as exc:
            return 400, exc.description
    """

    status_code: int = 400

    def __init__(self, description: str, *, reason: str = "bad_request") -> None:
        super().__init__(description)
        self.description = description
        #: A short machine-readable reason code ("unsafe_path", "reserved_header", ...).
        self.reason = reason


class DownstreamCallError(EntraError):
    """A downstream API could not be reached (502, or 504 on a timeout) or answered with a body larger than
    its ``max_response_bytes`` (502). The message names the API, never a token.

    ::

        try:
            response = await downstream.acall("weather", "forecast")
        except DownstreamCallError as exc:
            return exc.status_code, exc.description
    """

    def __init__(self, description: str, *, api: str, status_code: int = 502, reason: str = "unavailable") -> None:
        super().__init__(description)
        self.description = description
        self.api = api
        self.status_code = status_code
        self.reason = reason


class ConfigurationError(EntraError, ValueError):
    """The configuration is wrong; the message names the key (``AzureAd__TenantId``, ``tenant_id`` ...)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
