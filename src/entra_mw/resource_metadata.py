"""RFC 9728 protected-resource metadata for an API protected by Entra, and a pure-ASGI route that serves it.

MCP clients find their way to Entra through this document: a 401 names it in ``resource_metadata``, the client
fetches it, reads ``authorization_servers`` (the tenant's v2 issuer) and ``scopes_supported``, and signs in. Used
with the plain :class:`~entra_mw.asgi.EntraMiddleware`, it makes any ASGI app an MCP-ready resource server without
the ``mcp`` SDK::

    from entra_mw.asgi import EntraMiddleware
    from entra_mw.resource_metadata import ProtectedResource

    resource = ProtectedResource.for_auth(auth, resource="https://mcp.contoso.com/mcp", scopes=["Tools.Use"])
    app = resource.asgi(
        EntraMiddleware(mcp_app, auth=auth, requirement=resource.requirement(), challenge=resource.challenge())
    )

Entra only accepts a sign-in for a resource that is one of the app's App ID URIs (``identifierUris``) with scopes
named under that same URI (``{App ID URI}/{scope}``); anything else fails at Entra with AADSTS9010010 or
AADSTS901002, long before a token reaches the server. :func:`configuration_problems` names such a mismatch, and
:meth:`ProtectedResource.for_auth` logs it at start-up with the fix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._ids import is_guid
from ._principal import Principal
from ._requirements import Requirement
from .errors import Challenge, ConfigurationError, InsufficientScope

if TYPE_CHECKING:
    from ._config import EntraConfig
    from ._engine import EntraAuth

__all__ = [
    "WELL_KNOWN_PATH",
    "ProtectedResource",
    "ProtectedResourceMetadataMiddleware",
    "ResourceRequirement",
    "app_id_uris",
    "configuration_problems",
    "full_scopes",
    "issuer_v2",
    "metadata_url",
]

logger = logging.getLogger("entra_mw.mcp")

#: RFC 9728 §3: the well-known URI suffix; the resource's path (if any) follows it.
WELL_KNOWN_PATH = "/.well-known/oauth-protected-resource"

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _canonical(uri: str) -> str:
    """Scheme and host compared case-insensitively, a trailing slash aside (how the SDK compares resources)."""
    parts = urlsplit(uri.strip())
    if not parts.scheme or not parts.netloc:
        return uri.strip().rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path}".rstrip("/")


def check_resource(resource: str) -> str:
    """``resource`` if it can be an RFC 9728 resource identifier: an absolute ``https`` URL (``http`` only on
    loopback, for local development) with no query or fragment. Raises :class:`ConfigurationError` otherwise."""
    if not isinstance(resource, str) or not resource.strip():
        raise ConfigurationError("the resource URL is required", key="resource")
    parts = urlsplit(resource.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(
            f"the resource must be an absolute https:// URL (the server's App ID URI), got {resource!r}",
            key="resource",
        )
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ConfigurationError(
            f"the resource must use https:// (http only on loopback), got {resource!r}", key="resource"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            f"the resource must not carry a query, fragment or credentials (RFC 9728 §1.2), got {resource!r}",
            key="resource",
        )
    return resource.strip()


def metadata_url(resource: str) -> str:
    """The path-aware metadata address of RFC 9728 §3.1: the well-known suffix inserted between host and path.

    ::

        metadata_url("https://mcp.contoso.com/mcp")
        # 'https://mcp.contoso.com/.well-known/oauth-protected-resource/mcp'
    """
    parts = urlsplit(resource)
    path = parts.path if parts.path != "/" else ""
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN_PATH}{path}"


def issuer_v2(config: EntraConfig) -> str:
    """The tenant's v2 issuer (``{instance}{tenant}/v2.0``): the authorization server MCP clients discover.
    Clients append ``/.well-known/openid-configuration`` to it, which Entra serves."""
    return f"{config.authority}/v2.0"


def app_id_uris(config: EntraConfig) -> tuple[str, ...]:
    """The App ID URIs this app is known by: the configured ``audiences`` and ``api://{client_id}``."""
    return tuple(dict.fromkeys([*config.audiences, f"api://{config.client_id}"]))


def _is_full(scope: str) -> bool:
    return "/" in scope or ":" in scope


def full_scopes(resource: str, scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes in the form Entra's v2 endpoint needs: a short name (``Tools.Use``) becomes
    ``{resource}/Tools.Use``; a full one (``https://.../Tools.Use``, ``api://.../Tools.Use``) is kept."""
    if isinstance(scopes, str):
        scopes = scopes.split()
    base = resource.rstrip("/")
    out: list[str] = []
    for scope in scopes:
        if not isinstance(scope, str) or not scope.strip():
            raise ConfigurationError("scopes must be non-empty strings", key="scopes")
        out.append(scope if _is_full(scope) else f"{base}/{scope}")
    return tuple(dict.fromkeys(out))


def configuration_problems(config: EntraConfig | None, resource: str, scopes: Sequence[str]) -> list[str]:
    """What would make Entra refuse an MCP client's sign-in for ``resource`` and ``scopes``, each with its fix.
    Empty when the combination is right. ``config`` may be ``None`` when only the scopes can be checked."""
    problems: list[str] = []
    wanted = _canonical(resource)
    if config is not None and not is_guid(config.tenant_id):
        problems.append(
            f"the authorization server is named by tenant {config.tenant_id!r}, but the issuer in its metadata names "
            "the tenant id, so MCP clients that compare the two (RFC 8414 §3.3) stop there; a multi-tenant server "
            "cannot name one issuer at all. Fix: configure the tenant id (a GUID) as tenant_id / AzureAd__TenantId."
        )
    if config is not None and wanted not in {_canonical(u) for u in app_id_uris(config)}:
        problems.append(
            f"the resource {resource!r} is not one of the app's App ID URIs, so Entra refuses the sign-in "
            "(AADSTS9010010/AADSTS500011). Fix: add it to the app registration's identifierUris (Expose an API > "
            "Application ID URI) and to EntraConfig(audiences=...)."
        )
    for scope in scopes:
        if not _is_full(scope):
            problems.append(
                f"the scope {scope!r} is not in full-URI form; Entra's v2 endpoint resolves a bare name against "
                f"Microsoft Graph. Fix: use {resource.rstrip('/')}/{scope}."
            )
        elif scope.rpartition("/")[0] and _canonical(scope.rpartition("/")[0]) != wanted:
            problems.append(
                f"the scope {scope!r} is not named under the resource {resource!r}; a client that sends both "
                "(RFC 8707) is refused with AADSTS9010010. Fix: expose the scope under the resource's App ID URI."
            )
    return problems


def log_problems(problems: Iterable[str]) -> None:
    for problem in problems:
        logger.warning("mcp configuration: %s", problem)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectedResource:
    """An Entra-protected resource as RFC 9728 describes it: what the metadata document says and the challenge
    parameters that point to it.

    ::

        resource = ProtectedResource.for_auth(auth, resource="https://mcp.contoso.com/mcp", scopes=["Tools.Use"])
        resource.document()["authorization_servers"]   # ['https://login.microsoftonline.com/{tenant}/v2.0']
        resource.challenge()                           # for EntraMiddleware(..., challenge=...)
    """

    resource: str
    authorization_server: str
    scopes: tuple[str, ...] = ()
    resource_name: str | None = None
    resource_documentation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "resource", check_resource(self.resource))
        object.__setattr__(self, "scopes", full_scopes(self.resource, self.scopes))

    @classmethod
    def for_auth(
        cls,
        auth: EntraAuth,
        *,
        resource: str,
        scopes: Iterable[str] = (),
        resource_name: str | None = None,
        resource_documentation: str | None = None,
    ) -> ProtectedResource:
        """The resource served by ``auth``'s app: the authorization server is its tenant's v2 issuer and short
        scope names are put under ``resource``. Logs a warning with the fix when ``resource`` is not one of the
        app's App ID URIs."""
        out = cls(
            resource=resource,
            authorization_server=issuer_v2(auth.config),
            scopes=tuple(scopes),
            resource_name=resource_name,
            resource_documentation=resource_documentation,
        )
        log_problems(configuration_problems(auth.config, out.resource, out.scopes))
        return out

    @property
    def metadata_url(self) -> str:
        """Where the document is served (path-aware, RFC 9728 §3.1); what ``resource_metadata`` names."""
        return metadata_url(self.resource)

    @property
    def paths(self) -> tuple[str, ...]:
        """The request paths that serve the document: the path-aware one and, when different, the root one
        (clients written before path-aware discovery ask there)."""
        path = urlsplit(self.metadata_url).path
        return (path,) if path == WELL_KNOWN_PATH else (path, WELL_KNOWN_PATH)

    def document(self) -> dict[str, Any]:
        """The RFC 9728 §2 metadata document."""
        doc: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": [self.authorization_server],
            "bearer_methods_supported": ["header"],  # RFC 6750 §2.1 only: query and form tokens are refused
        }
        if self.scopes:
            doc["scopes_supported"] = list(self.scopes)
        if self.resource_name:
            doc["resource_name"] = self.resource_name
        if self.resource_documentation:
            doc["resource_documentation"] = self.resource_documentation
        return doc

    def requirement(self, *, roles: Iterable[str] = ()) -> ResourceRequirement:
        """A :class:`~entra_mw.Requirement` for this resource's scopes (checked against ``scp``, where Entra puts
        the short names) or ``roles``, whose 403 names the scopes in full-URI form, as a client must ask
        Entra for them::

            EntraMiddleware(app, auth=auth, requirement=resource.requirement(), challenge=resource.challenge())
        """
        prefix = self.resource.rstrip("/") + "/"
        short = [s[len(prefix) :] if s.startswith(prefix) else s for s in self.scopes]
        return ResourceRequirement(scopes=short, roles=tuple(roles), resource=self.resource)

    def challenge(self, *, realm: str | None = None) -> Challenge:
        """Challenge parameters for every 401/403: ``resource_metadata`` and ``scope`` (RFC 9728 §5.1)."""
        return Challenge(realm=realm, resource_metadata=self.metadata_url, scope=self.scopes)

    def asgi(self, app: ASGIApp | None = None) -> ProtectedResourceMetadataMiddleware:
        """A pure-ASGI app serving the document at :attr:`paths`, passing everything else to ``app`` (404
        without one)."""
        return ProtectedResourceMetadataMiddleware(app, resource=self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceRequirement(Requirement):
    """A :class:`~entra_mw.Requirement` whose ``insufficient_scope`` answer names the scopes under ``resource``
    (``{App ID URI}/{scope}``): the token's ``scp`` holds short names, but a client that asks Entra for a short
    name gets a Microsoft Graph scope instead."""

    resource: str = ""

    def check(self, principal: Principal) -> None:
        try:
            Requirement.check(self, principal)
        except InsufficientScope as exc:
            if not self.scopes or not self.resource or exc.reason != "insufficient_scope":
                raise
            raise InsufficientScope(full_scopes(self.resource, self.scopes), exc.description) from None


# CORS as the mcp SDK answers for its metadata route: any origin, GET and OPTIONS, the MCP protocol header.
_CORS = [
    (b"access-control-allow-origin", b"*"),
]
_PREFLIGHT = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, OPTIONS"),
    (b"access-control-allow-headers", b"mcp-protocol-version"),
    (b"access-control-max-age", b"600"),
]


class ProtectedResourceMetadataMiddleware:
    """Serve a :class:`ProtectedResource`'s document (``GET``, ``HEAD`` and CORS preflight ``OPTIONS``) at its
    :attr:`~ProtectedResource.paths`; every other request goes to ``app``. Put it *outside* the authenticating
    middleware: clients fetch the document without a token.

    ::

        app = ProtectedResourceMetadataMiddleware(EntraMiddleware(inner, auth=auth), resource=resource)
    """

    def __init__(self, app: ASGIApp | None, *, resource: ProtectedResource) -> None:
        self.app = app
        self.resource = resource
        self.paths = frozenset(resource.paths)
        self._body = json.dumps(resource.document(), separators=(",", ":")).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") in self.paths:
            await self._serve(scope, send)
            return
        if self.app is None:
            if scope["type"] == "lifespan":
                await _lifespan_noop(receive, send)
                return
            if scope["type"] == "http":
                await _respond(send, 404, [(b"content-type", b"application/json")], b'{"error":"not_found"}')
            return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, send: Send) -> None:
        method = scope.get("method", "GET")
        if method == "OPTIONS":
            await _respond(send, 204, _PREFLIGHT, b"")
            return
        if method not in ("GET", "HEAD"):
            headers = [(b"allow", b"GET, HEAD, OPTIONS"), (b"content-type", b"application/json"), *_CORS]
            await _respond(send, 405, headers, b'{"error":"method_not_allowed"}')
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"cache-control", b"public, max-age=3600"),
            *_CORS,
        ]
        await _respond(send, 200, headers, self._body, head=method == "HEAD")


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, head: bool = False
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan_noop(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
