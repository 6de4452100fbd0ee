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
    └── ConfigurationError           bad configuration, naming the key (500 if it ever reaches a client)

Adapters never decide a status: every error above has ``status_code``, ``headers()`` and ``body()``, and adapters
copy them into their framework's response. Challenge parameters an adapter is configured with (``realm``,
``resource_metadata``, ``scope``) are added with :class:`Challenge` or ``with_challenge``, which return a copy.
Descriptions are safe to show a client: they never contain a token, an assertion or a secret.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

__all__ = [
    "AuthError",
    "Challenge",
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
    """Root of every entra_mw error. Every one renders itself as an HTTP answer, so an adapter turns any of them
    into a response from ``status_code``, ``headers()`` and ``body()`` alone::

        except EntraError as exc:
            return Response(exc.body(), status=exc.status_code, headers=exc.headers())

    ``description`` is safe to show a client (never a token, an assertion or a secret); ``reason`` is a short
    machine-readable code for logs and metrics (``"expired"``, ``"bad_audience"``, ...).
    """

    #: The HTTP status to answer the client with.
    status_code: int = 500
    #: The ``error`` member of the JSON body (and, for auth errors, the RFC 6750 code of the challenge).
    error: str | None = "server_error"
    #: Seconds a client should wait before trying again (sent as ``Retry-After`` on a 503), or ``None``.
    retry_after: int | None = None

    def __init__(self, description: str = "", *, reason: str | None = None) -> None:
        super().__init__(description or self.__class__.__name__)
        self.description = description
        self.reason = reason or self.__class__.__name__.lower()

    @property
    def www_authenticate(self) -> str | None:
        """The ``WWW-Authenticate`` header value, or ``None`` for errors that carry no challenge."""
        return None

    def _public_description(self) -> str:
        return self.description

    def headers(self) -> list[tuple[str, str]]:
        """Response headers for this error: ``WWW-Authenticate`` first when there is one, then the JSON content
        type, ``Cache-Control: no-store`` and, on a 503, ``Retry-After``."""
        out: list[tuple[str, str]] = []
        challenge = self.www_authenticate
        if challenge is not None:
            out.append(("WWW-Authenticate", challenge))
        out.append(("Content-Type", "application/json"))
        out.append(("Cache-Control", "no-store"))
        if self.status_code == 503 or self.retry_after is not None:
            out.append(("Retry-After", str(self.retry_after if self.retry_after is not None else 5)))
        return out

    def body_dict(self) -> dict[str, Any]:
        """The JSON body as a dict: ``{"error": ..., "error_description": ...}`` and, where they apply, ``scope``
        and the AADSTS facts."""
        out: dict[str, Any] = {"error": self.error or "unauthorized"}
        description = self._public_description()
        if description:
            out["error_description"] = description
        return out

    def body(self) -> bytes:
        """The JSON body, UTF-8 encoded."""
        return json.dumps(self.body_dict(), separators=(",", ":")).encode()

    def with_challenge(
        self, *, realm: str | None = None, resource_metadata: str | None = None, scope: Sequence[str] | None = None
    ) -> Self:
        """This error with the adapter's challenge parameters, on a copy (errors may be shared); errors that
        carry no challenge return themselves."""
        return self

    def _copy(self) -> Self:
        new = type(self).__new__(type(self), *self.args)
        new.__dict__.update(self.__dict__)
        return new


E = TypeVar("E", bound=EntraError)


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """Challenge parameters an adapter adds to every 401/403 it renders (RFC 6750 §3, RFC 9728 §5.1).

    ::

        Challenge(resource_metadata="https://mcp.contoso.com/.well-known/oauth-protected-resource/mcp",
                  scope=("api://contoso-mcp/Tools.Use",))

    ``scope`` is added only to challenges that do not already name the scopes they lack.
    """

    realm: str | None = None
    resource_metadata: str | None = None
    scope: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", tuple(self.scope))

    def apply(self, error: E) -> E:
        """``error`` with these parameters (a copy when anything changes)."""
        return error.with_challenge(
            realm=self.realm, resource_metadata=self.resource_metadata, scope=self.scope or None
        )


class _Renders(EntraError):
    """An error that carries an RFC 6750 challenge: ``realm``, ``error``, ``error_description``, ``scope`` and
    ``resource_metadata``."""

    status_code: int = 401
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
        super().__init__(description, reason=reason)
        self.realm = realm
        self.resource_metadata = resource_metadata
        self.scope: tuple[str, ...] = tuple(scope or ())
        self.extra: dict[str, str] = dict(extra or {})

    def with_challenge(
        self, *, realm: str | None = None, resource_metadata: str | None = None, scope: Sequence[str] | None = None
    ) -> Self:
        new = self._copy()
        if realm is not None:
            new.realm = realm
        if resource_metadata is not None:
            new.resource_metadata = resource_metadata
        if scope is not None and not new.scope:
            new.scope = tuple(scope)
        return new

    @property
    def www_authenticate(self) -> str | None:
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

    def body_dict(self) -> dict[str, Any]:
        out = super().body_dict()
        if self.scope:
            out["scope"] = " ".join(self.scope)
        return out


class AuthError(_Renders):
    """An inbound request was refused. Subclasses fix the status and the RFC 6750 code."""

    status_code = 401


class MissingToken(AuthError):
    """No bearer token was sent (or an unsupported scheme such as ``Basic``): 401 with a bare challenge.

    RFC 6750 §3.1: when the request lacks authentication information the server should not include an error code.
    """

    status_code = 401
    error = None


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


class ProviderUnavailable(EntraError):
    """No usable signing keys could be had (discovery or JWKS unreachable and nothing cached): 503 with
    ``Retry-After``."""

    status_code = 503
    error = "temporarily_unavailable"
    retry_after = 5


class TokenAcquisitionError(EntraError):
    """Entra refused a token request, or it could not be reached.

    Carries what a caller needs to react (never a token): ``error`` (``invalid_grant``, ``invalid_client``,
    ``interaction_required`` ...), ``suberror`` (``consent_required`` ...), the AADSTS ``error_codes``,
    ``correlation_id``, ``trace_id``, and ``claims`` (a claims challenge to send back to the user's client).
    ``status_code`` is the HTTP status to answer the *caller* with: 401/403 when the user must act (consent,
    MFA), 502 when Entra refused the app itself or answered with something unusable, 503 (with ``Retry-After``)
    when Entra could not be reached or throttled, 504 when it did not answer in time.
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
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(description, reason=reason or error or "token_acquisition_failed")
        self.error = error
        self.suberror = suberror
        self.error_codes: tuple[int, ...] = tuple(error_codes)
        self.correlation_id = correlation_id
        self.trace_id = trace_id
        self.claims = claims
        #: The HTTP status Entra answered with (``None`` when it could not be reached).
        self.http_status = http_status
        self.status_code = status_code if status_code is not None else self._default_status()
        if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
            self.retry_after = max(1, math.ceil(retry_after))

    def _default_status(self) -> int:
        if self.http_status is None:
            return 503
        if 500133 in self.error_codes:
            # The caller's token expired between validation and the exchange: the caller must come back with a
            # fresh one (spec §5.3), which is a 401 invalid_token for the caller, not a gateway failure.
            return 401
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
        """A challenge for the caller when the user must act (consent, MFA, conditional access) or come back
        with a fresh token."""
        if self.status_code not in (401, 403):
            return None
        params = [("error", "insufficient_claims" if self.claims else "invalid_token")]
        if self.description:
            params.append(("error_description", self.description))
        if self.claims:
            params.append(("claims", base64.b64encode(self.claims.encode()).decode()))
        return "Bearer " + ", ".join(f"{k}={_quote(v)}" for k, v in params)

    def body_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error or _STATUS_ERROR.get(self.status_code, "server_error")}
        if self.description:
            out["error_description"] = self.description
        if self.suberror:
            out["suberror"] = self.suberror
        if self.error_codes:
            out["error_codes"] = list(self.error_codes)
        if self.correlation_id:
            out["correlation_id"] = self.correlation_id
        if self.claims:
            out["claims"] = self.claims
        return out

    def __repr__(self) -> str:
        return (
            f"TokenAcquisitionError(error={self.error!r}, suberror={self.suberror!r}, "
            f"error_codes={self.error_codes!r}, correlation_id={self.correlation_id!r})"
        )


_STATUS_ERROR = {
    400: "invalid_request",
    401: "invalid_token",
    403: "forbidden",
    502: "bad_gateway",
    503: "temporarily_unavailable",
    504: "gateway_timeout",
}


class DownstreamRequestError(EntraError, ValueError):
    """A downstream request was refused before anything was sent: an unsafe path, query or header, an unknown
    API name, or agent arguments that contradict each other. ``status_code`` is 400 (the input is at fault)
    unless a subclass or the raiser says otherwise (401 when a delegated API is called with no caller).

    ::

        try:
            downstream.call("graph", user_supplied_path)
        except DownstreamRequestError as exc:
            return 400, exc.description
    """

    status_code: int = 400
    error = "invalid_request"

    def __init__(self, description: str, *, reason: str = "bad_request", status_code: int | None = None) -> None:
        super().__init__(description, reason=reason)
        if status_code is not None:
            self.status_code = status_code
            self.error = _STATUS_ERROR.get(status_code, self.error)

    @property
    def www_authenticate(self) -> str | None:
        if self.status_code != 401:
            return None
        return f"Bearer error={_quote(self.error or 'invalid_token')}, error_description={_quote(self.description)}"


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
        super().__init__(description, reason=reason)
        self.api = api
        self.status_code = status_code
        self.error = _STATUS_ERROR.get(status_code, "bad_gateway")


class ConfigurationError(EntraError, ValueError):
    """The configuration is wrong; the message names the key as the user wrote it (``AzureAd__TenantId``,
    ``tenant_id`` ...). Raised at construction time; should one ever reach a client it renders as a 500 that
    does not repeat the message."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message, reason="configuration")
        self.key = key

    def _public_description(self) -> str:
        return "The server is not configured correctly."
