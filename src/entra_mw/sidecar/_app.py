"""The sidecar's routes (spec §1): the request pipeline, each endpoint, and how every error is answered.

Errors are ASP.NET ProblemDetails (``application/problem+json``: ``type``, ``title``, ``status``, ``detail``) with
the official status mapping (spec §1.5): Entra refused a token → 401 with its message; a request the sidecar
cannot serve → 400; anything unexpected → 500 with a generic message, nothing leaked. Inbound authentication
failures are JwtBearer's: the status and ``WWW-Authenticate``, no body.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import httpx2
from starlette.requests import Request
from starlette.responses import Response

from .._context import AuthContext
from .._engine import EntraAuth
from ..errors import (
    AuthError,
    ConfigurationError,
    DownstreamCallError,
    DownstreamRequestError,
    EntraError,
    ProviderUnavailable,
    TokenAcquisitionError,
)
from ._openapi import openapi_document
from ._options import AgentParams, Effective, Overrides, SidecarOptions, effective_options

if TYPE_CHECKING:
    from .._downstream import Downstream

__all__ = ["HostFiltering", "LoopbackOnly", "SidecarRoutes", "is_local_client"]

logger = logging.getLogger("entra_mw.sidecar")

#: Sent on every 2xx (SC/CacheControl.cs).
NO_CACHE: Final = {"Cache-Control": "no-cache, no-store, must-revalidate", "Expires": "0", "Pragma": "no-cache"}

# ASP.NET Core's ProblemDetails defaults (RFC 9110 section links and reason phrases).
_PROBLEMS: Final = {
    400: ("https://tools.ietf.org/html/rfc9110#section-15.5.1", "Bad Request"),
    401: ("https://tools.ietf.org/html/rfc9110#section-15.5.2", "Unauthorized"),
    403: ("https://tools.ietf.org/html/rfc9110#section-15.5.4", "Forbidden"),
    404: ("https://tools.ietf.org/html/rfc9110#section-15.5.5", "Not Found"),
    405: ("https://tools.ietf.org/html/rfc9110#section-15.5.6", "Method Not Allowed"),
    413: ("https://tools.ietf.org/html/rfc9110#section-15.5.14", "Content Too Large"),
    500: ("https://tools.ietf.org/html/rfc9110#section-15.6.1", "An error occurred while processing your request."),
    502: ("https://tools.ietf.org/html/rfc9110#section-15.6.3", "Bad Gateway"),
    503: ("https://tools.ietf.org/html/rfc9110#section-15.6.4", "Service Unavailable"),
    504: ("https://tools.ietf.org/html/rfc9110#section-15.6.5", "Gateway Timeout"),
}
_UNEXPECTED: Final = "An unexpected error occurred."
#: The Sidecar__AllowOverrides__* flag that gates each token route.
_GATE: Final = {
    "AuthorizationHeader": "GetAuthorizationHeader",
    "AuthorizationHeaderUnauthenticated": "GetAuthorizationHeaderUnauthenticated",
    "DownstreamApi": "CallDownstreamApi",
    "DownstreamApiUnauthenticated": "CallDownstreamApiUnauthenticated",
}

# HttpResponseMessage.Content.Headers: the only headers the DownstreamApi envelope carries, in .NET's casing.
_CONTENT_HEADERS: Final = {
    name.lower(): name
    for name in (
        "Allow",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Location",
        "Content-MD5",
        "Content-Range",
        "Content-Type",
        "Expires",
        "Last-Modified",
    )
}
_MEDIA_TYPE = re.compile(r"^\s*[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+\s*(;.*)?$")
MAX_REQUEST_BODY: Final = 10 * 1024 * 1024
_MAX_REDIRECTS: Final = 10


def is_local_client(client: Any) -> bool:
    """True when the caller's address is loopback (IPv4-mapped IPv6 too) or there is none (a Unix socket)."""
    if not client:
        return True
    host = client[0] if isinstance(client, tuple | list) else client
    if not host:
        return True
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class LoopbackOnly:
    """Pure ASGI: refuse callers that are not on loopback with 403 and an empty body; ``/healthz`` is exempt
    (spec §1.1 step 1, outside Development)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not is_local_client(scope.get("client")) and not _is_health(scope):
            logger.warning("non-loopback caller refused path=%s", scope["path"][:100])
            await _refuse(403, send)
            return
        await self.app(scope, receive, send)


class HostFiltering:
    """Pure ASGI: the official 1.0.x caller check (``ENTRA_MW_SIDECAR_COMPAT=1.0``): the ``Host`` header must name
    one of the allowed hosts (``*`` any, ``*.example.com`` its subdomains), else 400; ``/healthz`` is exempt."""

    def __init__(self, app: Callable[..., Awaitable[None]], *, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = allowed

    def _allowed(self, host: str) -> bool:
        name = host.strip().lower()
        if name.startswith("["):  # [::1]:5000
            name = name[1:].split("]", 1)[0]
        elif ":" in name:
            name = name.rsplit(":", 1)[0]
        return any(
            pattern in ("*", name) or (pattern.startswith("*.") and name.endswith(pattern[1:]))
            for pattern in self.allowed
        )

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not _is_health(scope):
            hosts = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"host"]
            if len(hosts) != 1 or not self._allowed(hosts[0]):
                logger.warning("request refused: its Host header is not in AllowedHosts")
                await _refuse(400, send)
                return
        await self.app(scope, receive, send)


def _is_health(scope: MutableMapping[str, Any]) -> bool:
    """``/healthz``, which the caller checks exempt."""
    path: str = scope["path"]
    return path.rstrip("/").lower() == "/healthz"


async def _refuse(status: int, send: Any) -> None:
    """A caller-check refusal: the status, an empty body."""
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def problem(status: int, detail: str | None = None, headers: dict[str, str] | None = None) -> Response:
    kind, title = _PROBLEMS.get(status, ("https://tools.ietf.org/html/rfc9110", "Error"))
    body: dict[str, Any] = {"type": kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return Response(_dumps(body), status_code=status, headers=headers, media_type="application/problem+json")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def ok_json(value: Any) -> Response:
    return Response(_dumps(value), status_code=200, headers=NO_CACHE, media_type="application/json; charset=utf-8")


def _no_scopes(api_name: str) -> DownstreamRequestError:
    # The official message, word for word (spec §1.5).
    return DownstreamRequestError(
        f"No scopes found for the API '{api_name}' or in optionsOverride. 'scopes' needs to be either a single "
        "value or a list of values.",
        reason="no_scopes",
    )


def render_error(exc: Exception, *, overridden: bool = False) -> Response:
    """The official answer for ``exc`` (spec §1.5), never a message that was not meant for a client."""
    if isinstance(exc, AuthError):
        # JwtBearer's challenge: the status and WWW-Authenticate, no body (400 for a malformed request gets
        # its description, since a client cannot guess it).
        headers = {"WWW-Authenticate": exc.www_authenticate or "Bearer"}
        if exc.status_code == 400:
            return problem(400, exc.description, headers)
        return Response(b"", status_code=exc.status_code, headers=headers)
    if isinstance(exc, TokenAcquisitionError):
        if exc.status_code in (503, 504):
            # Entra unreachable, throttling or failing (DESIGN: a retryable answer, not a 401 the caller would
            # read as "your token is bad").
            retry = {name: value for name, value in exc.headers() if name == "Retry-After"}
            return problem(exc.status_code, exc.description, retry)
        # Entra refused the request: 401 with its message (MsalServiceException / MsalUiRequiredException).
        return problem(401, exc.description)
    if isinstance(exc, ProviderUnavailable):
        return problem(503, exc.description, {"Retry-After": str(exc.retry_after or 5)})
    if isinstance(exc, DownstreamRequestError | DownstreamCallError):
        return problem(exc.status_code, exc.description)
    if isinstance(exc, ConfigurationError):
        if overridden:
            # Caused by this request's optionsOverride (a scope that cannot be an app scope, a meta-tenant...).
            return problem(400, exc.description)
        logger.error("sidecar configuration error key=%s: %s", exc.key, exc.description)
        return problem(500, _UNEXPECTED)
    if isinstance(exc, EntraError):
        logger.error("sidecar error %s reason=%s", type(exc).__name__, exc.reason)
        return problem(500, _UNEXPECTED)
    logger.error("unexpected sidecar error %s", type(exc).__name__)
    return problem(500, _UNEXPECTED)


def _payload(token: str) -> Any:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


_DOWNSTREAM_METHODS = ("POST", "GET", "PUT", "PATCH", "DELETE")


class SidecarRoutes:
    """The endpoint: one catch-all route dispatching case-insensitively, as ASP.NET routing does."""

    def __init__(self, auth: EntraAuth, options: SidecarOptions) -> None:
        self.auth = auth
        self.config = auth.config
        self.options = options
        self._openapi: bytes | None = None

    async def dispatch(self, request: Request) -> Response:
        parts = [p for p in request.scope["path"].split("/") if p]
        first = parts[0].lower() if parts else ""
        method = request.method
        if len(parts) == 1 and first == "healthz":
            return Response(b"Healthy", headers=NO_CACHE, media_type="text/plain")
        if len(parts) == 1 and first == "validate":
            return await self._guard(method, "GET", self.validate, request)
        if len(parts) == 2 and first == "openapi" and parts[1].lower() == "v1.json" and self.options.development:
            return await self._guard(method, "GET", self.openapi, request)
        if len(parts) == 2 and first in ("authorizationheader", "authorizationheaderunauthenticated"):
            name, authenticated = parts[1], first == "authorizationheader"
            return await self._guard(
                method, "GET", lambda r: self.authorization_header(r, name, authenticated), request
            )
        if len(parts) == 2 and first in ("downstreamapi", "downstreamapiunauthenticated"):
            name, authenticated = parts[1], first == "downstreamapi"
            # The official code maps POST only; its documentation (and the documentation's Python and TypeScript
            # clients, which send the downstream method as their own) lists GET, PUT, PATCH and DELETE as well.
            # Whatever the inbound method, the outbound one is HttpMethod (spec §1.6).
            return await self._guard(
                method, _DOWNSTREAM_METHODS, lambda r: self.downstream_api(r, name, authenticated), request
            )
        return Response(b"", status_code=404)

    @staticmethod
    async def _guard(
        method: str,
        allowed: str | tuple[str, ...],
        handler: Callable[[Request], Awaitable[Response]],
        request: Request,
    ) -> Response:
        methods = (allowed,) if isinstance(allowed, str) else allowed
        if method not in methods:
            return Response(b"", status_code=405, headers={"Allow": ", ".join(methods)})
        return await handler(request)

    async def _caller(self, request: Request) -> AuthContext:
        values = request.headers.getlist("authorization")
        authorization: str | list[str] | None = values[0] if len(values) == 1 else (values or None)
        return await self.auth.aauthenticate(authorization, query=request.scope.get("query_string"))

    # -- /Validate ---------------------------------------------------------------------------------------

    async def validate(self, request: Request) -> Response:
        try:
            ctx = await self._caller(request)
        except EntraError as exc:
            return render_error(exc)
        assert ctx.principal is not None
        assert ctx.token is not None
        wanted = (self.config.validate_scopes or "").strip()
        if wanted and wanted not in ctx.principal.scopes:
            # VerifyUserHasAnyAcceptedScope with the whole AzureAd:Scopes string as one scope (spec §1.7).
            text = f"IDW10203: The 'scope' or 'scp' claim does not contain scopes '{wanted}' or was not found. "
            return Response(text.encode(), status_code=403, media_type="text/plain")
        try:
            claims = _payload(ctx.token)
        except (ValueError, IndexError):
            return problem(400, "Failed to decode token claims")
        if not isinstance(claims, dict):
            return problem(400, "Invalid JSON in token payload")
        return ok_json({"protocol": "Bearer", "token": ctx.token, "claims": claims})

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = _dumps(openapi_document())
        return Response(self._openapi, headers=NO_CACHE, media_type="application/json; charset=utf-8")

    # -- token routes ------------------------------------------------------------------------------------

    def _prepare(
        self, request: Request, api_name: str, ctx: AuthContext | None, *, allowed: bool, route: str
    ) -> tuple[Effective, Downstream]:
        """Merge the overrides, apply the agent parameters, and build the request's ``Downstream``."""
        query = parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        overrides = Overrides.from_query(query)
        effective = effective_options(self.config, api_name, overrides, allowed=allowed, route=route)
        agent = AgentParams.from_query(query)
        if agent.present and not allowed:
            # 1.1.0+: agent parameters are applied only when the route's AllowOverrides flag is on (EventId 5).
            logger.warning("agent parameters ignored: Sidecar__AllowOverrides disables them route=%s", route)
            agent = AgentParams()
        agent.check()
        if not effective.configured_scopes:
            raise _no_scopes(api_name)
        downstream = self.auth.downstream(ctx.principal, ctx.token) if ctx is not None else self.auth.downstream()
        user = bool(agent.username or agent.user_id)
        if agent.identity:
            # UPN wins when both are allowed through (they are refused above; kept for clarity).
            downstream = downstream.for_agent(
                agent.identity, username=agent.username, user_id=None if agent.username else agent.user_id
            )
        if ctx is None and not effective.request_app_token and not user:
            # Spec §1.4: a delegated token needs a user; with no caller this is MSAL's "no account" (401).
            fix = "Set RequestAppToken=true"
            if overrides.has_any and not allowed:
                # Said here too: the warning that the override was dropped is only in the sidecar's log.
                fix = (
                    f"Set DownstreamApis__{api_name}__RequestAppToken=true (this request's optionsOverride was "
                    f"ignored: Sidecar__AllowOverrides__{_GATE[route]} is false)"
                )
            raise DownstreamRequestError(
                f"No user token to act for: the API '{api_name}' asks for a delegated token (RequestAppToken is "
                f"false) and this route has no caller. {fix}, or call the authenticated route with the user's "
                "bearer token.",
                reason="no_caller",
                status_code=401,
            )
        return effective, downstream

    async def authorization_header(self, request: Request, api_name: str, authenticated: bool) -> Response:
        route = "AuthorizationHeader" if authenticated else "AuthorizationHeaderUnauthenticated"
        allowed = (
            self.options.get_authorization_header
            if authenticated
            else self.options.get_authorization_header_unauthenticated
        )
        effective: Effective | None = None
        try:
            ctx = await self._caller(request) if authenticated else None
            effective, downstream = self._prepare(request, api_name, ctx, allowed=allowed, route=route)
            header = await _authorization_header(downstream, api_name, effective, force_refresh=effective.force_refresh)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the official answer, a bug a generic 500
            return render_error(exc, overridden=effective is not None and effective.overridden)
        return ok_json({"authorizationHeader": header})

    async def downstream_api(self, request: Request, api_name: str, authenticated: bool) -> Response:
        route = "DownstreamApi" if authenticated else "DownstreamApiUnauthenticated"
        allowed = (
            self.options.call_downstream_api if authenticated else self.options.call_downstream_api_unauthenticated
        )
        effective: Effective | None = None
        try:
            ctx = await self._caller(request) if authenticated else None
            effective, downstream = self._prepare(request, api_name, ctx, allowed=allowed, route=route)
            api = effective.api
            if api is None or not api.base_url:
                raise DownstreamRequestError(
                    f"The downstream API '{api_name}' is not configured (DownstreamApis__{api_name}__BaseUrl)",
                    reason="unknown_api",
                )
            headers = dict(effective.extra_headers)
            if effective.accept_header:
                headers["Accept"] = effective.accept_header
            content_type = request.headers.get("content-type")
            body: bytes | None = None
            if content_type and _MEDIA_TYPE.match(content_type):
                # Forwarded with the caller's media type; read from the stream, so a chunked body (no
                # Content-Length) is passed through as well (spec §1.6 "Inbound body").
                body = await _read_body(request)
                if body is None:
                    return problem(413, f"The request body is larger than {MAX_REQUEST_BODY} bytes")
                headers["Content-Type"] = content_type
            if effective.force_refresh or effective.claims:
                await _authorization_header(downstream, api_name, effective, force_refresh=True)
            response = await downstream.acall(
                api_name,
                effective.relative_path or "",
                method=effective.http_method,
                content=body,
                params=dict(effective.extra_query) or None,
                headers=headers or None,
                scopes=effective.scopes,
                app=effective.request_app_token,
                tenant=effective.tenant,
            )
            if self.options.allow_outbound_redirects and response.is_redirect:
                response = await self._follow(response, headers, body, api.max_response_bytes, api_name)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the official answer, a bug a generic 500
            return render_error(exc, overridden=effective is not None and effective.overridden)
        return ok_json(envelope(response))

    async def _follow(
        self, response: httpx2.Response, headers: dict[str, str], body: bytes | None, cap: int, api_name: str
    ) -> httpx2.Response:
        """Follow redirects as .NET's HttpClient does: the Authorization header is not sent on, an https → http
        hop is not taken, 301/302/303 become GET without a body, at most ten hops."""
        client = self.auth._http.aclient  # the engine's pooled client (package-internal)
        method = response.request.method
        for _ in range(_MAX_REDIRECTS):
            location = response.headers.get("location")
            if not location:
                return response
            url = response.request.url.join(location)
            downgrade = response.request.url.scheme == "https" and url.scheme != "https"
            if url.scheme not in ("http", "https") or downgrade:
                return response
            if response.status_code in (301, 302, 303) and method != "HEAD":
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            request = client.build_request(method, url, headers=headers, content=body)
            try:
                streamed = await client.send(request, stream=True, follow_redirects=False)
                try:
                    data = bytearray()
                    async for chunk in streamed.aiter_bytes():
                        data += chunk
                        if len(data) > cap:
                            raise DownstreamCallError(
                                f"the downstream API '{api_name}' answered with more than {cap} bytes",
                                api=api_name,
                                reason="response_too_large",
                            )
                finally:
                    await streamed.aclose()
            except httpx2.HTTPError:
                raise DownstreamCallError(
                    f"the downstream API '{api_name}' could not be reached (redirect)", api=api_name
                ) from None
            response = httpx2.Response(
                streamed.status_code,
                headers=[(k, v) for k, v in streamed.headers.multi_items() if k.lower() != "content-encoding"],
                content=bytes(data),
                request=request,
            )
            if not response.is_redirect:
                return response
        return response


async def _authorization_header(
    downstream: Downstream, api_name: str, effective: Effective, *, force_refresh: bool
) -> str:
    """The header for ``api_name`` as the request's merged options say."""
    return await downstream.aauthorization_header(
        api_name,
        scopes=effective.scopes,
        app=effective.request_app_token,
        tenant=effective.tenant,
        claims=effective.claims,
        force_refresh=force_refresh,
    )


def envelope(response: httpx2.Response) -> dict[str, Any]:
    """``{"statusCode", "headers", "content"}`` (spec §1.6): content headers only, in .NET's casing, each a list;
    ``content`` the body as text, or ``null`` when it is empty."""
    headers: dict[str, list[str]] = {}
    for name, value in response.headers.multi_items():
        canonical = _CONTENT_HEADERS.get(name.lower())
        if canonical is not None:
            headers.setdefault(canonical, []).append(value)
    body = response.content
    # .NET computes Content-Length from the buffered body (so a chunked answer has one too).
    headers["Content-Length"] = [str(len(body))]
    return {"statusCode": response.status_code, "headers": headers, "content": response.text if body else None}


async def _read_body(request: Request) -> bytes | None:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_REQUEST_BODY:
            return None
    return bytes(data)
