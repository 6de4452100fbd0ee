"""The FakeEntra object: directory, signing keys, discovery and JWKS endpoints, faults, counters, transports.

Request handling is sans-IO at its core: :meth:`FakeEntra._plan` turns an ``httpx2.Request`` into a plan
(latency to wait, whether the connection "fails", a function producing the response). Three drivers run it:
the sync transport, the async transport and the HTTPS server in ``_serve``. Latency faults wait on FakeEntra's
``latency_clock`` seam (real time by default: latency stands for the network, whatever clock the claims use).

Endpoints (spec §5.4, §5.5; the token endpoint lives in ``_token_endpoint``):

* ``GET /common/discovery/instance?authorization_endpoint=...&api-version=1.0`` — instance discovery;
* ``GET /common/userrealm/{username}?api-version=1.0`` — user realm discovery (MSAL asks it before ROPC);
* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and (v1)
  ``GET /{tenant}/.well-known/openid-configuration`` for a tenant id, its domain, ``common`` or
  ``organizations``, with optional ``?appid=``;
* ``GET /{tenant}/discovery/v2.0/keys`` and ``GET /{tenant}/discovery/keys`` (v1), with optional ``?appid=``;
* ``POST /{tenant}/oauth2/v2.0/token`` and ``POST /{tenant}/oauth2/token`` (v1);
* ``GET|POST /{tenant}/oauth2/v2.0/authorize``, the sign-in (``POST /{tenant}/login``) and consent
  (``POST /{tenant}/consent``) pages, ``GET|POST /{tenant}/oauth2/v2.0/logout`` (``_interactive``);
* ``GET /msi/token`` — the App Service / Container Apps managed-identity endpoint (``_managed_identity``).

Documents are built from the request's own scheme and host, so they work in process and when served; issuers
always use ``authority_host`` (the served URL after ``serve(as_issuer=True)``).
"""

from __future__ import annotations

import datetime
import json
import secrets
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .._clock import Clock, SystemClock, seeded_random
from ._interactive import (
    InteractiveState,
    drive_sign_in,
    handle_authorize,
    handle_consent,
    handle_login,
    handle_logout,
)
from ._keys import (
    SigningKey,
    new_signing_key,
    pooled_rsa_key,
    private_key_pem,
    self_signed_cert,
    thumbprints,
)
from ._managed_identity import MANAGED_IDENTITY_PATH, handle_managed_identity
from ._mint import EXCHANGE_AUDIENCE, MintRequest, build_claims, encode_jws, normalize_scopes
from ._registry import (
    TEMPLATE_TENANTS,
    AgentIdentity,
    AgentUser,
    App,
    Certificate,
    ConsentGrant,
    FederatedCredential,
    Registry,
    Secret,
    Tenant,
    User,
    new_id,
)
from ._token_endpoint import GRANTS, TokenEndpointState, handle_token_request

if TYPE_CHECKING:
    from ._serve import ServedFakeEntra

__all__ = ["ENDPOINTS", "FakeEntra", "FaultRule", "Faults", "Scenario"]

_GRANT_NAMES: Final = {grant_type: f"token:{name}" for grant_type, name in GRANTS.items()}

ENDPOINTS: Final = frozenset(
    {
        "instance_discovery",
        "user_realm",
        "openid_configuration",
        "jwks",
        "token",
        *_GRANT_NAMES.values(),
        "authorize",
        "login",
        "consent",
        "logout",
        "managed_identity",
    }
)
"""Endpoint names used by counters and faults (``"*"`` also matches every endpoint in faults)."""

_TENANTID: Final = "{tenantid}"
_DISCOVERY_CACHE: Final = "max-age=86400, private"  # what Entra sends on metadata and keys
_JSON: Final = "application/json; charset=utf-8"
# openid-configuration ``claims_supported``: the shared head, then what each version adds.
_CLAIMS_SUPPORTED: Final = (
    "sub",
    "iss",
    "cloud_instance_name",
    "cloud_instance_host_name",
    "cloud_graph_host_name",
    "msgraph_host",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "acr",
)
_CLAIMS_SUPPORTED_V1: Final = ("amr", "nonce", "email", "given_name", "family_name", "nickname")
_CLAIMS_SUPPORTED_V2: Final = ("nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email")
_PUBLIC_CLOUD_ALIASES: Final = (
    "login.microsoftonline.com",
    "login.windows.net",
    "login.microsoft.com",
    "sts.windows.net",
)


_GRAPH_APP_ID: Final = "00000003-0000-0000-c000-000000000000"
_MICROSOFT_TENANT: Final = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"  # Microsoft Services, Graph's home tenant
_GRAPH_SCOPES: Final = ("User.Read", "User.ReadBasic.All", "Mail.Read", "Calendars.Read", "Files.Read")


def _checked_redirect_uris(uris: Iterable[str]) -> list[str]:
    out: list[str] = []
    for uri in uris:
        if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in uri):
            raise ValueError(f"redirect URI {uri!r} contains whitespace or control characters")
        parsed = urllib.parse.urlsplit(uri)
        if parsed.scheme not in ("https", "http") or not parsed.hostname or parsed.fragment:
            raise ValueError(f"redirect URI {uri!r} must be an absolute http(s) URL without a fragment")
        if parsed.scheme == "http" and parsed.hostname not in ("localhost", "127.0.0.1", "::1"):
            raise ValueError(f"redirect URI {uri!r}: plain http is allowed only for localhost, as in Entra")
        out.append(uri)
    return out


def _registered_acr(client: App | AgentIdentity) -> Literal["0", "1", "2"]:
    if isinstance(client, AgentIdentity):
        return "2"  # agents authenticate only with assertions (T1)
    if client.is_managed_identity:
        return "2"  # a managed identity authenticates to Entra with a platform-held certificate
    if client.secrets:
        return "1"
    if client.certificates or client.federated_credentials:
        return "2"
    return "0"


# -- faults ------------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True, kw_only=True)
class FaultRule:
    """One injected fault. ``times=None`` is persistent; otherwise it applies to the next ``times`` requests.

    Effects combine: ``latency`` seconds of real delay, then either a dropped connection (``outage``) or a
    response with ``status`` / ``body`` / ``headers`` replacing the real one (when ``status`` or ``body`` is
    set).
    """

    endpoint: str
    status: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0
    outage: bool = False
    times: int | None = None
    hits: int = 0

    @property
    def replaces_response(self) -> bool:
        return self.status is not None or self.body is not None


class Faults:
    """Fault injection per endpoint (names in :data:`ENDPOINTS`, or ``"*"`` for all). Thread-safe.

    Example::

        fake.faults.outage("jwks", times=1)           # next JWKS fetch: connection error
        fake.faults.rate_limit("token", retry_after=3)  # every token request: 429 + Retry-After: 3
        fake.faults.latency("discovery", 0.05)  # instance discovery + openid-configuration
        fake.faults.clear()
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    @staticmethod
    def _names(endpoint: str) -> list[str]:
        if endpoint == "discovery":
            return ["instance_discovery", "openid_configuration"]
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)} or '*'")
        return [endpoint]

    def set(
        self,
        endpoint: str,
        *,
        status: int | None = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        latency: float = 0.0,
        outage: bool = False,
        retry_after: int | None = None,
        times: int | None = None,
    ) -> list[FaultRule]:
        """Add a rule (two for ``"discovery"``). Returns the rules added (pass them to :meth:`remove`)."""
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None for a persistent fault)")
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["Retry-After"] = str(retry_after)
        raw = body.encode() if isinstance(body, str) else body
        rules = [
            FaultRule(
                endpoint=name,
                status=status,
                body=raw,
                headers=hdrs,
                latency=latency,
                outage=outage,
                times=times,
            )
            for name in self._names(endpoint)
        ]
        with self._lock:
            self._rules.extend(rules)
        return rules

    def outage(self, endpoint: str, *, times: int | None = None) -> list[FaultRule]:
        """Connections fail: ``httpx2.ConnectError`` in process, a dropped connection when served."""
        return self.set(endpoint, outage=True, times=times)

    def latency(self, endpoint: str, seconds: float, *, times: int | None = None) -> list[FaultRule]:
        """Delay answers by ``seconds`` of real time (keep it tiny in tests)."""
        return self.set(endpoint, latency=seconds, times=times)

    def garbage(
        self,
        endpoint: str,
        body: bytes = b"<html>\x00not json{",
        *,
        status: int = 200,
        times: int | None = None,
    ) -> list[FaultRule]:
        """Answer ``status`` with a malformed body (still labelled JSON)."""
        return self.set(endpoint, status=status, body=body, times=times)

    def rate_limit(self, endpoint: str, *, retry_after: int = 3, times: int | None = None) -> list[FaultRule]:
        """HTTP 429 with ``Retry-After`` (integer seconds, spec §5.2)."""
        return self.set(endpoint, status=429, retry_after=retry_after, times=times)

    def server_error(
        self, endpoint: str, status: int = 503, *, retry_after: int | None = None, times: int | None = None
    ) -> list[FaultRule]:
        """A 5xx answer, optionally with ``Retry-After``."""
        return self.set(endpoint, status=status, retry_after=retry_after, times=times)

    def remove(self, rules: FaultRule | Iterable[FaultRule]) -> None:
        drop = {id(rules)} if isinstance(rules, FaultRule) else {id(r) for r in rules}
        with self._lock:
            self._rules = [r for r in self._rules if id(r) not in drop]

    def clear(self, endpoint: str | None = None) -> None:
        """Remove every rule, or the rules for one endpoint."""
        with self._lock:
            if endpoint is None:
                self._rules.clear()
            else:
                names = set(self._names(endpoint))
                self._rules = [r for r in self._rules if r.endpoint not in names]

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        with self._lock:
            return tuple(self._rules)

    def take(self, names: Sequence[str]) -> FaultRule | None:
        """The first rule matching any of ``names`` (or ``"*"``), consuming one of its uses."""
        with self._lock:
            for rule in self._rules:
                if rule.endpoint == "*" or rule.endpoint in names:
                    rule.hits += 1
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule
        return None


# -- scenario ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """The ready-made directory of :meth:`FakeEntra.quickstart` (the sidecar local-development story)."""

    tenant: Tenant
    api: App
    client: App
    client_secret: str = field(repr=False)
    user: User
    user_password: str = field(repr=False)
    blueprint: App
    blueprint_secret: str = field(repr=False)
    agent: AgentIdentity
    agent_user: AgentUser


@dataclass(frozen=True, slots=True)
class _Plan:
    endpoint: str
    latency: float
    outage: bool
    respond: Callable[[], httpx2.Response]


class _Transport(httpx2.BaseTransport):
    def __init__(self, fake: FakeEntra) -> None:
        self._fake = fake

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self._fake.handle(request)


class _AsyncTransport(httpx2.AsyncBaseTransport):
    def __init__(self, fake: FakeEntra) -> None:
        self._fake = fake

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        plan = self._fake._plan(request)
        if plan.latency > 0:
            await self._fake.latency_clock.asleep(plan.latency)
        if plan.outage:
            raise httpx2.ConnectError("FakeEntra: connection failed (injected outage)", request=request)
        return plan.respond()


# -- FakeEntra ---------------------------------------------------------------------------------------------


class FakeEntra:
    """A faithful local Microsoft Entra ID: directory, keys, discovery, JWKS, token endpoint, faults.

    Reach it in process through :attr:`transport` / :attr:`async_transport` (they answer for
    ``https://login.microsoftonline.com/...`` and any other host), or over HTTPS with :meth:`serve`.
    Everything is thread-safe; :attr:`lock` guards the registry and the keys.

    Example::

        fake = FakeEntra(clock=FakeClock())
        s = fake.quickstart()
        auth = EntraAuth(EntraConfig(tenant_id=s.tenant.tenant_id, client_id=s.api.app_id),
                         transport=fake.transport, clock=fake.clock)
        principal = auth.validate(fake.app_token(s.client, resource=s.api))
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        authority_host: str = "login.microsoftonline.com",
        latency_clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        #: What latency faults sleep on: real time unless a test gives another clock (latency is network time,
        #: which a fake ``clock`` for the claims does not shorten).
        self.latency_clock: Clock = latency_clock if latency_clock is not None else SystemClock()
        self.authority_host = authority_host
        self.registry = Registry()
        self.lock = threading.RLock()
        self.faults = Faults()
        self._rng = seeded_random(0x5EED)  # token lifetimes, deterministic per FakeEntra
        self._counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        first = new_signing_key()
        self._keys: list[SigningKey] = [first]  # published tenant-wide keys
        self._current: SigningKey = first
        self._app_keys: dict[str, list[SigningKey]] = {}
        self._known: dict[str, SigningKey] = {first.kid: first}  # every key ever made, for sign(kid=...)
        self._scenario: Scenario | None = None
        self._token_state = TokenEndpointState()  # refresh tokens and external OIDC issuers
        self._interactive_state = InteractiveState()  # pending sign-ins, authorization codes, SSO sessions
        self.identity_header = secrets.token_urlsafe(24)
        """The managed-identity endpoint's secret (``IDENTITY_HEADER``); requests must send it."""
        self._served: list[ServedFakeEntra] = []
        self._transport: _Transport | None = None
        self._async_transport: _AsyncTransport | None = None

    def __repr__(self) -> str:
        return f"FakeEntra(authority_host={self.authority_host!r}, tenants={len(self.registry.tenants)})"

    # -- registry helpers ------------------------------------------------------------------------------------

    def _tenant(self, tenant: Tenant | str) -> Tenant:
        if isinstance(tenant, Tenant):
            return tenant
        found = self.registry.tenant(tenant)
        if found is None:
            raise ValueError(f"unknown tenant {tenant!r}")
        return found

    def add_tenant(self, *, tenant_id: str | None = None, domain: str | None = None, display_name: str = "") -> Tenant:
        """Register a tenant. ``domain`` defaults to ``tenant-<hex>.onmicrosoft.com``."""
        tid = (tenant_id or new_id()).lower()
        dom = domain or f"tenant-{tid[:8]}.onmicrosoft.com"
        record = Tenant(tenant_id=tid, domain=dom, display_name=display_name or dom.split(".", 1)[0])
        with self.lock:
            if tid in self.registry.tenants:
                raise ValueError(f"tenant {tid} already exists")
            self.registry.tenants[tid] = record
        return record

    def _add_app(
        self,
        tenant: Tenant | str,
        *,
        display_name: str,
        app_id: str | None,
        identifier_uris: Sequence[str] | None,
        access_token_version: int,
        scopes: Sequence[str],
        app_roles: Sequence[str],
        multi_tenant: bool,
        kind: Literal["app", "blueprint", "managed_identity"],
        redirect_uris: Sequence[str] = (),
        public_client: bool = False,
    ) -> App:
        if access_token_version not in (1, 2):
            raise ValueError("access_token_version must be 1 or 2")
        with self.lock:
            ten = self._tenant(tenant)
            aid = (app_id or new_id()).lower()
            if aid in self.registry.apps or aid in self.registry.agents:
                raise ValueError(f"app {aid} already exists")
            app = App(
                app_id=aid,
                tenant_id=ten.tenant_id,
                display_name=display_name,
                identifier_uris=tuple(identifier_uris) if identifier_uris is not None else (f"api://{aid}",),
                access_token_version=2 if access_token_version == 2 else 1,
                scopes=tuple(scopes),
                app_roles=tuple(app_roles),
                multi_tenant=multi_tenant,
                kind=kind,
                redirect_uris=_checked_redirect_uris(redirect_uris),
                public_client=public_client,
            )
            self.registry.apps[aid] = app
        return app

    def add_app(
        self,
        tenant: Tenant | str,
        *,
        display_name: str = "app",
        app_id: str | None = None,
        identifier_uris: Sequence[str] | None = None,
        access_token_version: int = 2,
        scopes: Sequence[str] = (),
        app_roles: Sequence[str] = (),
        multi_tenant: bool = False,
        redirect_uris: Sequence[str] = (),
        public_client: bool = False,
    ) -> App:
        """Register an app (and its service principal). ``identifier_uris`` defaults to ``(api://{app_id},)``.

        ``redirect_uris`` are its reply URLs for web sign-in; ``public_client=True`` makes it a public client
        (see :meth:`add_public_client`).
        """
        return self._add_app(
            tenant,
            display_name=display_name,
            app_id=app_id,
            identifier_uris=identifier_uris,
            access_token_version=access_token_version,
            scopes=scopes,
            app_roles=app_roles,
            multi_tenant=multi_tenant,
            kind="app",
            redirect_uris=redirect_uris,
            public_client=public_client,
        )

    def add_public_client(
        self,
        tenant: Tenant | str,
        *,
        display_name: str = "public-client",
        redirect_uris: Sequence[str] = ("http://localhost",),
        app_id: str | None = None,
        multi_tenant: bool = False,
    ) -> App:
        """Register a public client: no secret or certificate, PKCE required, the redirect URIs it may use.

        A loopback redirect URI (``http://localhost``, ``http://127.0.0.1``) matches any port, as Entra matches
        them for desktop and CLI clients (MCP clients listen on a random local port).

        Example::

            cli = fake.add_public_client(s.tenant, redirect_uris=["http://localhost"])
            fake.pre_authorize(s.api, cli, ["Weather.Read"])  # no consent prompt for this client
        """
        return self._add_app(
            tenant,
            display_name=display_name,
            app_id=app_id,
            identifier_uris=(),
            access_token_version=2,
            scopes=(),
            app_roles=(),
            multi_tenant=multi_tenant,
            kind="app",
            redirect_uris=redirect_uris,
            public_client=True,
        )

    def add_redirect_uri(self, app: App, *uris: str) -> None:
        """Register more reply URLs on ``app``."""
        checked = _checked_redirect_uris(uris)
        with self.lock:
            app.redirect_uris.extend(u for u in checked if u not in app.redirect_uris)

    def pre_authorize(self, resource: App, client: App, scopes: Sequence[str]) -> None:
        """List ``client`` as an authorized client application of ``resource`` for ``scopes``: its users are
        never asked to consent to them (the API's "Authorized client applications")."""
        names = frozenset(normalize_scopes(scopes, resource))
        unknown = sorted(n for n in names if n not in resource.scopes)
        if unknown:
            raise ValueError(f"{resource.display_name} exposes no scope {unknown[0]!r}")
        with self.lock:
            key = client.app_id.lower()
            resource.pre_authorized[key] = resource.pre_authorized.get(key, frozenset()) | names

    def add_managed_identity(
        self,
        tenant: Tenant | str,
        *,
        display_name: str = "managed-identity",
        client_id: str | None = None,
        system_assigned: bool = False,
    ) -> App:
        """Register a managed identity the managed-identity endpoint answers for.

        ``system_assigned=True`` makes it the host's system-assigned identity (asked for with no id; at most
        one); otherwise it is user-assigned and picked by ``client_id``, ``principal_id`` or ``mi_res_id``.
        Its tokens are app-only (``sub`` = its principal id); :meth:`trust_managed_identity` lets an app accept
        its ``api://AzureADTokenExchange`` token as a federated credential.
        """
        with self.lock:
            if system_assigned and any(a.system_assigned for a in self.registry.apps.values() if a.is_managed_identity):
                raise ValueError("a system-assigned managed identity is already registered")
            identity = self._add_app(
                tenant,
                display_name=display_name,
                app_id=client_id,
                identifier_uris=(),
                access_token_version=2,
                scopes=(),
                app_roles=(),
                multi_tenant=False,
                kind="managed_identity",
            )
            identity.system_assigned = system_assigned
            if not system_assigned:
                identity.mi_resource_id = (
                    f"/subscriptions/{uuid.uuid5(uuid.NAMESPACE_URL, identity.tenant_id)}/resourceGroups/fake-entra"
                    f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{display_name}"
                )
        return identity

    def trust_managed_identity(self, app: App, identity: App) -> FederatedCredential:
        """Let ``app`` authenticate with ``identity``'s token for ``api://AzureADTokenExchange`` (a federated
        identity credential: issuer = the identity's tenant's v2 issuer, subject = its principal id)."""
        if not identity.is_managed_identity:
            raise ValueError("trust_managed_identity needs a managed identity (add_managed_identity)")
        return self.add_federated_credential(
            app, issuer=self._v2_issuer(identity.tenant_id), subject=identity.principal_id
        )

    def microsoft_graph(self) -> App:
        """Microsoft Graph (``00000003-0000-0000-c000-000000000000``, multi-tenant, ``User.Read`` & co.),
        registered on first use in Microsoft's own tenant. Resourceless scopes (``User.Read``) and sign-in-only
        requests (``openid profile``) resolve to it, as with Entra."""
        with self.lock:
            found = self.registry.app(_GRAPH_APP_ID)
            if found is not None:
                return found
            if self.registry.tenant(_MICROSOFT_TENANT) is None:
                self.add_tenant(
                    tenant_id=_MICROSOFT_TENANT, domain="microsoft.onmicrosoft.com", display_name="Microsoft Services"
                )
            return self.add_app(
                _MICROSOFT_TENANT,
                display_name="Microsoft Graph",
                app_id=_GRAPH_APP_ID,
                identifier_uris=("https://graph.microsoft.com",),
                scopes=_GRAPH_SCOPES,
                multi_tenant=True,
            )

    def add_blueprint(self, tenant: Tenant | str, **kwargs: Any) -> App:
        """Register an agent identity blueprint: :meth:`add_app` with ``kind="blueprint"`` (spec §3.1)."""
        kwargs.setdefault("display_name", "blueprint")
        return self._add_app(
            tenant,
            display_name=kwargs.pop("display_name"),
            app_id=kwargs.pop("app_id", None),
            identifier_uris=kwargs.pop("identifier_uris", None),
            access_token_version=kwargs.pop("access_token_version", 2),
            scopes=kwargs.pop("scopes", ()),
            app_roles=kwargs.pop("app_roles", ()),
            multi_tenant=kwargs.pop("multi_tenant", False),
            kind="blueprint",
            **kwargs,
        )

    def add_secret(self, app: App, value: str | None = None, *, expires_at: float | None = None) -> str:
        """Add a client secret (Entra-looking when generated) and return its value."""
        if value is None:
            value = f"{secrets.token_urlsafe(3)[:3]}8Q~{secrets.token_urlsafe(30)[:37]}"
        with self.lock:
            app.secrets.append(Secret(value=value, expires_at=expires_at))
        return value

    def add_certificate(self, app: App) -> tuple[bytes, bytes]:
        """Register a new self-signed certificate on ``app``; returns ``(private_key_pem, cert_pem)``."""
        key = pooled_rsa_key("client-certificate")
        cert = self_signed_cert(key, f"CN={app.display_name}")
        x5t, x5t256 = thumbprints(cert)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        with self.lock:
            app.certificates.append(
                Certificate(pem=cert_pem, thumbprint_sha1=x5t, thumbprint_sha256=x5t256, subject=app.display_name)
            )
        return private_key_pem(key), cert_pem

    def add_federated_credential(
        self,
        app: App,
        *,
        issuer: str,
        subject: str,
        audiences: Sequence[str] = (EXCHANGE_AUDIENCE,),
    ) -> FederatedCredential:
        """Trust tokens from ``issuer`` with ``subject`` as client assertions for ``app``."""
        fic = FederatedCredential(
            issuer=issuer,
            subject=subject,
            audiences=tuple(audiences),
            name=f"fic-{len(app.federated_credentials)}",
        )
        with self.lock:
            app.federated_credentials.append(fic)
        return fic

    def add_user(
        self,
        tenant: Tenant | str,
        *,
        upn: str | None = None,
        password: str | None = None,
        display_name: str = "",
        mfa_required: bool = False,
    ) -> User:
        """Register a user. ``upn`` defaults to ``user-<hex>@{tenant domain}``."""
        with self.lock:
            ten = self._tenant(tenant)
            oid = new_id()
            name = upn or f"user-{oid[:8]}@{ten.domain}"
            if self.registry.user(name) is not None:
                raise ValueError(f"user {name} already exists")
            user = User(
                object_id=oid,
                tenant_id=ten.tenant_id,
                upn=name,
                display_name=display_name or name.split("@", 1)[0].title(),
                password=password,
                mfa_required=mfa_required,
            )
            self.registry.users[oid] = user
        return user

    def add_agent_identity(
        self,
        blueprint: App,
        *,
        display_name: str = "agent",
        app_id: str | None = None,
        tenant: Tenant | str | None = None,
    ) -> AgentIdentity:
        """Create an agent identity owned by ``blueprint`` (in ``tenant``, default the blueprint's)."""
        if not blueprint.is_blueprint:
            raise ValueError("an agent identity's parent must be a blueprint (add_blueprint)")
        with self.lock:
            ten = self._tenant(tenant if tenant is not None else blueprint.tenant_id)
            aid = (app_id or new_id()).lower()
            if aid in self.registry.apps or aid in self.registry.agents:
                raise ValueError(f"app {aid} already exists")
            agent = AgentIdentity(
                app_id=aid,
                sp_object_id=new_id(),
                tenant_id=ten.tenant_id,
                blueprint_app_id=blueprint.app_id,
                display_name=display_name,
            )
            self.registry.agents[aid] = agent
        return agent

    def add_agent_user(self, agent: AgentIdentity, *, upn: str | None = None) -> AgentUser:
        """Create an agent user whose parent is ``agent`` (it signs in only via ``user_fic``, spec §3.5)."""
        with self.lock:
            ten = self._tenant(agent.tenant_id)
            oid = new_id()
            name = upn or f"agentuser-{oid[:8]}@{ten.domain}"
            if self.registry.agent_user(name) is not None or self.registry.user(name) is not None:
                raise ValueError(f"user {name} already exists")
            record = AgentUser(
                object_id=oid,
                tenant_id=ten.tenant_id,
                upn=name,
                agent_app_id=agent.app_id,
                display_name=name.split("@", 1)[0],
            )
            self.registry.agent_users[oid] = record
        return record

    def grant_consent(
        self,
        client: App | AgentIdentity,
        resource: App,
        scopes: Sequence[str],
        *,
        user: User | None = None,
    ) -> ConsentGrant:
        """Delegated-permission grant (tenant-wide, or for one ``user``)."""
        grant = ConsentGrant(
            client_app_id=client.app_id,
            resource_app_id=resource.app_id,
            scopes=frozenset(normalize_scopes(scopes, resource)),
            user_oid=user.object_id if user is not None else None,
        )
        with self.lock:
            self.registry.consents.append(grant)
        return grant

    def grant_app_roles(self, client: App | AgentIdentity, resource: App, roles: Sequence[str]) -> None:
        """Grant application permissions (app roles of ``resource``) to ``client``."""
        with self.lock:
            key = resource.app_id.lower()
            client.granted_roles[key] = client.granted_roles.get(key, frozenset()) | frozenset(roles)

    # -- scenario --------------------------------------------------------------------------------------------

    def quickstart(self) -> Scenario:
        """The sidecar local-development directory (idempotent: a second call returns the same scenario).

        ``api`` ("weather-api", v2, scope ``Weather.Read``, app role ``Weather.Read.All``); ``client`` (with
        a secret, consented to the api's scopes and to the blueprint's ``access_agent``, granted the api's
        role); ``user`` alice (password ``P@ssw0rd!``); ``blueprint`` (with a secret, exposing
        ``access_agent``, consented to the api's scopes and granted its role); ``agent`` (its agent identity:
        consented to the api's scopes, granted the api's role) and ``agent_user``.
        """
        with self.lock:
            if self._scenario is not None:
                return self._scenario
            tenant = self.add_tenant(domain="contoso.onmicrosoft.com", display_name="Contoso")
            api = self.add_app(
                tenant, display_name="weather-api", scopes=("Weather.Read",), app_roles=("Weather.Read.All",)
            )
            client = self.add_app(tenant, display_name="weather-client")
            client_secret = self.add_secret(client)
            self.grant_consent(client, api, api.scopes)
            self.grant_app_roles(client, api, api.app_roles)
            password = "P@ssw0rd!"
            user = self.add_user(tenant, upn=f"alice@{tenant.domain}", password=password, display_name="Alice Example")
            blueprint = self.add_blueprint(tenant, display_name="weather-agent-blueprint", scopes=("access_agent",))
            blueprint_secret = self.add_secret(blueprint)
            self.grant_consent(blueprint, api, api.scopes)
            # The blueprint also calls the api app-only (the sidecar's RequestAppToken), so it holds the role.
            self.grant_app_roles(blueprint, api, api.app_roles)
            self.grant_consent(client, blueprint, blueprint.scopes)
            agent = self.add_agent_identity(blueprint, display_name="weather-agent")
            self.grant_consent(agent, api, api.scopes)
            self.grant_app_roles(agent, api, api.app_roles)
            agent_user = self.add_agent_user(agent, upn=f"weather-agent@{tenant.domain}")
            self._scenario = Scenario(
                tenant=tenant,
                api=api,
                client=client,
                client_secret=client_secret,
                user=user,
                user_password=password,
                blueprint=blueprint,
                blueprint_secret=blueprint_secret,
                agent=agent,
                agent_user=agent_user,
            )
            return self._scenario

    def sign_in(
        self,
        authorize_url: str,
        *,
        username: str,
        password: str,
        consent: bool = True,
        client: httpx2.Client | None = None,
    ) -> dict[str, str]:
        """Play the person at the browser: open ``authorize_url``, fill in the sign-in page, accept (or decline)
        the consent page, and return the parameters the browser would bring to the redirect URI (``code``,
        ``state``, ``session_state`` — or ``error``, ``error_description``), whatever the ``response_mode``.

        ``client`` keeps the browser's cookies (the SSO session) between calls; by default a new in-process one
        is used. Pass ``httpx2.Client(verify=served.ssl_context())`` for a served FakeEntra. A page that shows
        an error (wrong password, unregistered redirect URI …) raises ``ValueError`` with Entra's message.

        Example::

            flow = app.initiate_auth_code_flow(scopes, redirect_uri=uri, response_mode="form_post")
            result = app.acquire_token_by_auth_code_flow(flow, fake.sign_in(flow["auth_uri"], username=u, password=p))
        """
        if client is not None:
            return drive_sign_in(client, authorize_url, username=username, password=password, consent=consent)
        with httpx2.Client(transport=self.transport) as own:
            return drive_sign_in(own, authorize_url, username=username, password=password, consent=consent)

    @property
    def test_users(self) -> tuple[User, ...]:
        """Users who can sign in on the sign-in page (those registered with a password), for printing.

        Example::

            for user in fake.test_users:
                print(user.upn, user.password)
        """
        with self.lock:
            return tuple(u for u in self.registry.users.values() if u.password is not None)

    # -- keys ------------------------------------------------------------------------------------------------

    @property
    def current_kid(self) -> str:
        """The ``kid`` of the key that signs new tokens (app-specific keys aside)."""
        with self.lock:
            return self._current.kid

    def rotate_keys(self, *, keep_old: bool = True) -> str:
        """Make a new current signing key and return its ``kid``.

        ``keep_old=True`` keeps the previous keys in the JWKS (tokens they signed still validate);
        ``keep_old=False`` drops them (those tokens now carry an unknown ``kid``).
        """
        key = new_signing_key()
        with self.lock:
            self._known[key.kid] = key
            self._keys = [*self._keys, key] if keep_old else [key]
            self._current = key
        return key.kid

    def add_app_specific_key(self, app: App) -> str:
        """A key served only at ``?appid={app_id}``; tokens for resource ``app`` are signed with it."""
        key = new_signing_key()
        with self.lock:
            self._known[key.kid] = key
            self._app_keys.setdefault(app.app_id.lower(), []).append(key)
        return key.kid

    def _published(self) -> list[SigningKey]:
        with self.lock:
            out = list(self._keys)
            for keys in self._app_keys.values():
                out.extend(keys)
            return out

    def signing_key(self, kid: str | None = None) -> SigningKey:
        """The key with ``kid`` (any key ever made, even one dropped from the JWKS), or the current key."""
        with self.lock:
            if kid is None:
                return self._current
            found = self._known.get(kid)
        if found is None:
            raise ValueError("unknown kid")
        return found

    # -- minting ---------------------------------------------------------------------------------------------

    def default_lifetime(self) -> int:
        """A token lifetime as Entra picks it: random between 60 and 90 minutes (ED access-tokens.md)."""
        with self.lock:
            return self._rng.randint(3600, 5400)

    def _resource(self, resource: App | str) -> App | None:
        if isinstance(resource, App):
            return resource
        low = resource.rstrip("/")
        if low.lower().endswith("/.default"):
            low = low[: -len("/.default")]
        if low.lower() == EXCHANGE_AUDIENCE.lower():
            return None
        found = self.registry.app_by_identifier(low)
        if found is None:
            raise ValueError(f"unknown resource {resource!r}")
        return found

    def issue_token(
        self,
        *,
        tenant: Tenant | str,
        resource: App | str,
        client: App | AgentIdentity,
        user: User | AgentUser | None = None,
        scopes: Iterable[str] | None = None,
        roles: Iterable[str] | None = None,
        version: int | None = None,
        lifetime: int | None = None,
        fmi_path: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        kid: str | None = None,
        azpacr: Literal["0", "1", "2"] | None = None,
    ) -> str:
        """Mint an access token with Entra's real shape (spec §3.7, §4; ED access-tokens.md).

        * ``version`` defaults to the resource's ``access_token_version``; the exchange audience
          (``"api://AzureADTokenExchange"``) and T1 are always v2.
        * user tokens: ``scp`` = ``scopes`` (short names), default the consented scopes of ``client`` on
          ``resource`` (the resource's exposed scopes when none were consented); ``roles`` only when given.
        * app tokens: ``roles`` default to the client's granted roles on ``resource``; no ``scp``.
        * ``fmi_path`` makes T1: audience ``api://AzureADTokenExchange``,
          ``sub`` ``/eid1/c/pub/t/../a/../{path}``.
        * ``extra_claims`` are merged last; a ``None`` value removes that claim.
        * signed with the resource's app-specific key if it has one, else the current key (or ``kid``).
        * ``azpacr`` (``appidacr`` on v1) is how the client authenticated: ``"0"`` public client, ``"1"``
          secret, ``"2"`` certificate or signed assertion. The token endpoint passes the credential actually
          used; minted directly, it follows the client's registered credentials (agents always ``"2"``).

        Example::

            token = fake.issue_token(tenant=s.tenant, resource=s.api, client=s.client, user=s.user)
        """
        with self.lock:
            ten = self._tenant(tenant)
            res = self._resource(resource)
            if fmi_path is not None:
                res = None
            blueprint: App | None = None
            if isinstance(client, AgentIdentity):
                blueprint = self.registry.app(client.blueprint_app_id)
            if user is None:
                scope_list: list[str] = []
                if roles is not None:
                    role_list = list(roles)
                elif res is not None:
                    role_list = sorted(client.granted_roles.get(res.app_id.lower(), frozenset()))
                else:
                    role_list = []
            else:
                requested = list(scopes) if scopes is not None else None
                if requested is None or any(s.endswith(".default") for s in requested):
                    consented: Iterable[str] = ()
                    if res is not None:
                        consented = self.registry.consented_scopes(client.app_id, res.app_id, user.object_id)
                        consented = sorted(consented) or list(res.scopes)
                    requested = [s for s in (requested or []) if not s.endswith(".default")] + list(consented)
                scope_list = normalize_scopes(requested, res)
                role_list = list(roles) if roles is not None else []
            # The exchange audience (T1 included) is always v2.
            ver = 2 if res is None else (version if version is not None else res.access_token_version)
            if ver not in (1, 2):
                raise ValueError("version must be 1 or 2")
            if azpacr is None:
                azpacr = _registered_acr(client)
            elif azpacr not in ("0", "1", "2"):
                raise ValueError("azpacr must be '0', '1' or '2'")
            if kid is None and res is not None and res.app_id.lower() in self._app_keys:
                key = self._app_keys[res.app_id.lower()][-1]
            else:
                key = self.signing_key(kid)
            req = MintRequest(
                authority_host=self.authority_host,
                tenant_id=ten.tenant_id,
                resource=res,
                client=client,
                blueprint=blueprint,
                user=user,
                scopes=scope_list,
                roles=role_list,
                version=ver,
                now=int(self.clock.time()),
                lifetime=lifetime if lifetime is not None else self.default_lifetime(),
                fmi_path=fmi_path,
                azpacr=azpacr,
            )
        claims = build_claims(req)
        for name, value in (extra_claims or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        header: dict[str, Any] = {"typ": "JWT", "alg": "RS256"}
        if ver == 1:
            header["x5t"] = key.x5t  # v1 headers carry x5t as well as kid (spec §4.4)
        header["kid"] = key.kid
        return encode_jws(header, claims, alg="RS256", key=key.private_key)

    def user_token(
        self,
        user: User | AgentUser,
        *,
        client: App | AgentIdentity,
        resource: App,
        scopes: Iterable[str] | None = None,
        **kw: Any,
    ) -> str:
        """A delegated token for ``user`` in the user's tenant (see :meth:`issue_token`)."""
        kw.setdefault("tenant", user.tenant_id)
        return self.issue_token(client=client, resource=resource, user=user, scopes=scopes, **kw)

    def app_token(
        self,
        client: App | AgentIdentity,
        *,
        resource: App | str,
        roles: Iterable[str] | None = None,
        **kw: Any,
    ) -> str:
        """An app-only token for ``client`` in its own tenant (see :meth:`issue_token`)."""
        kw.setdefault("tenant", client.tenant_id)
        return self.issue_token(client=client, resource=resource, roles=roles, **kw)

    def sign(
        self, claims: Mapping[str, Any], *, header: Mapping[str, Any] | None = None, kid: str | None = None
    ) -> str:
        """Sign arbitrary ``claims`` with RS256 and a FakeEntra key (``kid`` or the current key)."""
        key = self.signing_key(kid)
        hdr: dict[str, Any] = {"typ": "JWT", "alg": "RS256", "kid": key.kid}
        hdr.update(header or {})
        return encode_jws(hdr, dict(claims), alg="RS256", key=key.private_key)

    def mint_raw(
        self,
        header: bytes | Mapping[str, Any],
        payload: bytes | Mapping[str, Any],
        *,
        key: Any = None,
        alg: str = "RS256",
        signature: bytes | None = None,
    ) -> str:
        """Assemble any compact JWS, for attack tests. ``header``/``payload`` are raw bytes or JSON objects.

        ``alg`` picks how to sign (it is *not* written into the header for you): ``RS*``/``PS*`` (RSA key or
        PEM; ``None`` = the current FakeEntra key), ``ES*`` (EC key or PEM; ``None`` = a fresh P-256 key),
        ``HS*`` (bytes/str secret; ``None`` = the current key's *public* PEM: the classic RS/HS confusion),
        ``none`` (empty signature). ``signature`` is used verbatim when given.

        Example::

            forged = fake.mint_raw({"alg": "HS256", "kid": fake.current_kid}, claims, alg="HS256")
        """
        if key is None:
            family = alg[:2].upper()
            if family in {"RS", "PS"}:
                key = self.signing_key().private_key
            elif family == "HS":
                key = self.signing_key().public_pem()
            elif family == "ES":
                curve: ec.EllipticCurve = {"384": ec.SECP384R1(), "512": ec.SECP521R1()}.get(alg[2:], ec.SECP256R1())
                key = ec.generate_private_key(curve)
        return encode_jws(header, payload, alg=alg, key=key, signature=signature)

    def decode(self, token: str) -> dict[str, Any]:
        """Verify ``token``'s RS256 signature against the published keys and return its claims.

        Times and audience are *not* checked (the caller compares ``exp``/``nbf`` with its clock). Raises
        ``jwt.InvalidTokenError`` for anything else wrong.
        """
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        key = next((k for k in self._published() if k.kid == kid), None)
        if key is None:
            raise jwt.InvalidTokenError("unknown kid")
        claims: dict[str, Any] = jwt.decode(
            token,
            key.public_key,
            algorithms=["RS256"],
            options={
                "verify_aud": False,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": False,
            },
        )
        return claims

    # -- counters --------------------------------------------------------------------------------------------

    def count(self, name: str) -> None:
        """Count one request for ``name`` (the token endpoint counts per-grant names itself)."""
        with self._counts_lock:
            self._counts[name] = self._counts.get(name, 0) + 1

    def request_count(self, endpoint: str) -> int:
        """Requests seen for ``endpoint`` (see :data:`ENDPOINTS`), faulted ones included."""
        with self._counts_lock:
            return self._counts.get(endpoint, 0)

    def reset_counts(self) -> None:
        with self._counts_lock:
            self._counts.clear()

    # -- HTTP ------------------------------------------------------------------------------------------------

    @property
    def transport(self) -> httpx2.BaseTransport:
        """An in-process sync transport (like ``httpx2.MockTransport``) answering for any host."""
        if self._transport is None:
            self._transport = _Transport(self)
        return self._transport

    @property
    def async_transport(self) -> httpx2.AsyncBaseTransport:
        """The async twin of :attr:`transport` (asyncio or trio; latency faults do not block the loop)."""
        if self._async_transport is None:
            self._async_transport = _AsyncTransport(self)
        return self._async_transport

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one request in process (latency faults wait on :attr:`latency_clock`; outages raise
        ``ConnectError``)."""
        request.read()
        plan = self._plan(request)
        if plan.latency > 0:
            self.latency_clock.sleep(plan.latency)
        if plan.outage:
            raise httpx2.ConnectError("FakeEntra: connection failed (injected outage)", request=request)
        return plan.respond()

    def serve(self, *, port: int = 0, as_issuer: bool = False) -> ServedFakeEntra:
        """Serve this FakeEntra over HTTPS on ``127.0.0.1`` (``port=0``: a free one); use as a context manager.

        ``as_issuer=True`` makes the served URL this FakeEntra's authority host: issuers, tokens and discovery
        then say ``https://127.0.0.1:{port}/{tenant}/v2.0``, so clients that require the metadata ``issuer`` to
        equal the URL they discovered it from (RFC 8414 §3.3: the ``mcp`` SDK's OAuth client) accept it. Call it
        before minting tokens (earlier tokens keep the old issuer); one served instance at most.

        Example::

            with fake.serve() as served:
                client = httpx2.Client(verify=served.ssl_context())
                client.get(served.base_url + "common/v2.0/.well-known/openid-configuration")
        """
        from ._serve import ServedFakeEntra

        with self.lock:
            if as_issuer and any(item._as_issuer for item in self._served if not item.closed):
                raise ValueError("another served instance is already this FakeEntra's issuer")
            served = ServedFakeEntra(self, port=port)
            if as_issuer:
                served._as_issuer = True
                self.authority_host = f"127.0.0.1:{served.port}"
            self._served.append(served)
        return served

    def close(self) -> None:
        """Stop every server started by :meth:`serve`."""
        with self.lock:
            served, self._served = self._served, []
        for item in served:
            item.close()

    # -- responses -------------------------------------------------------------------------------------------

    def json_response(
        self, payload: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> httpx2.Response:
        """A JSON response with Entra's usual headers (``x-ms-request-id``, ``x-ms-ests-server``)."""
        hdrs = {
            "Content-Type": _JSON,
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-ests-server": "2.1.99999.1 - FAKE ProdSlices",
        }
        hdrs.update(headers or {})
        return httpx2.Response(status, headers=hdrs, content=json.dumps(payload).encode())

    def error_response(
        self,
        status: int,
        error: str,
        code: int,
        message: str,
        *,
        suberror: str | None = None,
        claims: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx2.Response:
        """An Entra error body (spec §5.2): ``error``, ``error_description`` with ``AADSTS{code}: {message}``
        and the trace lines, ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id`` (+
        ``error_uri``; ``suberror``, ``claims`` when given). Sent with ``Cache-Control: no-store``."""
        trace_id = str(uuid.uuid4())
        corr = correlation_id or str(uuid.uuid4())
        stamp = datetime.datetime.fromtimestamp(self.clock.time(), datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body: dict[str, Any] = {
            "error": error,
            "error_description": (
                f"AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {corr}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": corr,
            "error_uri": f"https://{self.authority_host}/error?code={code}",
        }
        if suberror is not None:
            body["suberror"] = suberror
        if claims is not None:
            body["claims"] = claims
        hdrs = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache", "x-ms-request-id": trace_id}
        hdrs.update(headers or {})
        return self.json_response(body, status=status, headers=hdrs)

    def _discovery_json(self, payload: Any) -> httpx2.Response:
        return self.json_response(
            payload, headers={"Cache-Control": _DISCOVERY_CACHE, "Access-Control-Allow-Origin": "*"}
        )

    # -- routing ---------------------------------------------------------------------------------------------

    def _plan(self, request: httpx2.Request) -> _Plan:
        segments = [urllib.parse.unquote(s) for s in request.url.path.split("/") if s]
        endpoint, respond = self._route(request, segments)
        names = [endpoint]
        if endpoint == "token":
            grant = self._peek_grant(request)
            if grant is not None:
                names.append(grant)
        self.count(endpoint)
        rule = self.faults.take(names) if endpoint != "other" else None
        if rule is None:
            return _Plan(endpoint, 0.0, False, respond)
        if rule.outage:
            return _Plan(endpoint, rule.latency, True, respond)
        if rule.replaces_response:
            return _Plan(endpoint, rule.latency, False, lambda: self._fault_response(rule))
        if rule.headers:
            return _Plan(endpoint, rule.latency, False, lambda: self._with_headers(respond(), rule.headers))
        return _Plan(endpoint, rule.latency, False, respond)

    @staticmethod
    def _with_headers(response: httpx2.Response, headers: Mapping[str, str]) -> httpx2.Response:
        response.headers.update(headers)
        return response

    def _fault_response(self, rule: FaultRule) -> httpx2.Response:
        status = rule.status if rule.status is not None else 200
        if rule.body is not None:
            hdrs = {"Content-Type": _JSON}
            hdrs.update(rule.headers)
            return httpx2.Response(status, headers=hdrs, content=rule.body)
        if status == 429:
            code, text = 50196, "The server is throttling requests (fault)."
        else:
            code, text = 90033, "A transient error has occurred (fault)."
        return self.error_response(status, "temporarily_unavailable", code, text, headers=rule.headers)

    @staticmethod
    def _peek_grant(request: httpx2.Request) -> str | None:
        try:
            form = urllib.parse.parse_qs(request.content.decode("utf-8", "replace"))
        except (ValueError, httpx2.RequestNotRead):
            return None
        values = form.get("grant_type")
        return _GRANT_NAMES.get(values[0]) if values else None

    def _route(self, request: httpx2.Request, segs: list[str]) -> tuple[str, Callable[[], httpx2.Response]]:
        method = request.method.upper()
        n = len(segs)
        low = [s.lower() for s in segs]
        if n == 3 and low[1:] == ["discovery", "instance"]:
            return "instance_discovery", self._get_only(method, lambda: self._instance_discovery(request))
        if n == 3 and low[:2] == ["common", "userrealm"]:
            return "user_realm", self._get_only(method, lambda: self._user_realm(segs[2]))
        if n == 4 and low[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return "openid_configuration", self._get_only(method, lambda: self._openid(request, segs[0], v1=False))
        if n == 3 and low[1:] == [".well-known", "openid-configuration"]:
            return "openid_configuration", self._get_only(method, lambda: self._openid(request, segs[0], v1=True))
        if n == 4 and low[1:] == ["discovery", "v2.0", "keys"]:
            return "jwks", self._get_only(method, lambda: self._jwks(request, segs[0]))
        if n == 3 and low[1:] == ["discovery", "keys"]:
            return "jwks", self._get_only(method, lambda: self._jwks(request, segs[0]))
        if n == 2 and low == ["discovery", "keys"]:
            return "jwks", self._get_only(method, lambda: self._jwks(request, "common"))
        if (n == 4 and low[1:] == ["oauth2", "v2.0", "token"]) or (n == 3 and low[1:] == ["oauth2", "token"]):
            return "token", lambda: handle_token_request(self, segs[0], request)
        if n == 4 and low[1:] == ["oauth2", "v2.0", "authorize"]:
            return "authorize", lambda: handle_authorize(self, segs[0], request)
        if n == 2 and low[1] == "login":
            return "login", lambda: handle_login(self, segs[0], request)
        if n == 2 and low[1] == "consent":
            return "consent", lambda: handle_consent(self, segs[0], request)
        if (n == 4 and low[1:] == ["oauth2", "v2.0", "logout"]) or (n == 3 and low[1:] == ["oauth2", "logout"]):
            return "logout", lambda: handle_logout(self, segs[0], request)
        if "/".join(low) == MANAGED_IDENTITY_PATH:
            return "managed_identity", lambda: handle_managed_identity(self, request)
        return "other", lambda: self.json_response(
            {"error": "not_found", "error_description": "FakeEntra has no such endpoint."}, status=404
        )

    def _get_only(self, method: str, respond: Callable[[], httpx2.Response]) -> Callable[[], httpx2.Response]:
        if method == "GET":
            return respond
        return lambda: self.json_response(
            {"error": "method_not_allowed", "error_description": f"{method} is not allowed; use GET."},
            status=405,
            headers={"Allow": "GET"},
        )

    def _base(self, request: httpx2.Request) -> str:
        url = request.url
        port = f":{url.port}" if url.port is not None else ""
        return f"{url.scheme}://{url.host}{port}"

    def _unknown_tenant(self, segment: str) -> httpx2.Response:
        return self.error_response(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{segment[:64]}' not found. Check to make sure you have the correct tenant ID and are "
            "signing into the correct cloud. Check with your subscription administrator, this may happen if "
            "there are no active subscriptions for the tenant.",
        )

    def _resolve_segment(self, segment: str) -> tuple[str, str | None] | None:
        """``(path segment to use in URLs, tenant id or None for a template)``, or None if unknown."""
        low = segment.lower()
        if low in TEMPLATE_TENANTS:
            return low, None
        with self.lock:
            tenant = self.registry.tenant(segment)
        if tenant is None:
            return None
        return tenant.tenant_id, tenant.tenant_id

    def _v2_issuer(self, tid: str | None) -> str:
        return f"https://{self.authority_host}/{tid or _TENANTID}/v2.0"

    def _instance_discovery(self, request: httpx2.Request) -> httpx2.Response:
        endpoint = request.url.params.get("authorization_endpoint")
        parsed: httpx2.URL | None = None
        if endpoint:
            try:
                parsed = httpx2.URL(endpoint)
            except (httpx2.InvalidURL, TypeError, ValueError):
                parsed = None
        path = [s for s in parsed.path.split("/") if s] if parsed is not None else []
        if parsed is None or parsed.scheme != "https" or not parsed.host or not path:
            return self.error_response(400, "invalid_instance", 50049, "Unknown or invalid instance.")
        host = parsed.host + (f":{parsed.port}" if parsed.port is not None else "")
        if parsed.port is None and parsed.host == request.url.host and request.url.port is not None:
            # MSAL builds ``authorization_endpoint`` from the authority's hostname and drops its port (MSALPY
            # 1.39 ``authority.canonicalize``); when it names this very server, point back at the port asked.
            host = f"{parsed.host}:{request.url.port}"
        tenant = path[0]
        aliases = list(_PUBLIC_CLOUD_ALIASES) if self.authority_host in _PUBLIC_CLOUD_ALIASES else []
        if self.authority_host not in aliases:
            aliases.insert(0, self.authority_host)
        # Entra names login.windows.net as the public cloud's cache key (MSAL stores tokens under it); other
        # authority hosts are their own cache key.
        public = self.authority_host in _PUBLIC_CLOUD_ALIASES
        metadata: list[dict[str, Any]] = [
            {
                "preferred_network": self.authority_host,
                "preferred_cache": "login.windows.net" if public else self.authority_host,
                "aliases": aliases,
            }
        ]
        if host not in aliases:
            metadata.append({"preferred_network": host, "preferred_cache": host, "aliases": [host]})
        return self._discovery_json(
            {
                "tenant_discovery_endpoint": f"https://{host}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": metadata,
            }
        )

    def _user_realm(self, username: str) -> httpx2.Response:
        # Every FakeEntra domain is cloud-managed (no federation, so MSAL never tries WS-Trust); a domain no
        # tenant owns is "Unknown", as Entra answers.
        domain = username.rpartition("@")[2][:256]
        with self.lock:
            tenant = self.registry.tenant(domain) if domain else None
        body: dict[str, Any] = {"ver": "1.0", "account_type": "Managed" if tenant is not None else "Unknown"}
        if tenant is not None:
            body["domain_name"] = tenant.domain
        body["cloud_instance_name"] = "microsoftonline.com"
        body["cloud_audience_urn"] = "urn:federation:MicrosoftOnline"
        return self.json_response(body, headers={"Cache-Control": "no-store, no-cache"})

    def _openid(self, request: httpx2.Request, segment: str, *, v1: bool) -> httpx2.Response:
        resolved = self._resolve_segment(segment)
        if resolved is None:
            return self._unknown_tenant(segment)
        seg, tid = resolved
        root = f"{self._base(request)}/{seg}"
        oauth2 = f"{root}/oauth2" if v1 else f"{root}/oauth2/v2.0"
        appid = request.url.params.get("appid")
        query = f"?appid={urllib.parse.quote(appid, safe='')}" if appid else ""
        # The v1 and v2 documents share most fields; the differences are kept in Entra's own field order.
        doc: dict[str, Any] = {
            "token_endpoint": f"{oauth2}/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{root}/discovery/keys{query}" if v1 else f"{root}/discovery/v2.0/keys{query}",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }
        if v1:
            doc["response_types_supported"] = ["code", "id_token", "code id_token", "token id_token", "token"]
            doc["scopes_supported"] = ["openid"]
            doc["issuer"] = f"https://sts.windows.net/{tid or _TENANTID}/"
            doc["microsoft_multi_refresh_token"] = True
        else:
            doc["response_types_supported"] = ["code", "id_token", "code id_token", "id_token token"]
            doc["scopes_supported"] = ["openid", "profile", "email", "offline_access"]
            doc["issuer"] = self._v2_issuer(tid)
            doc["request_uri_parameter_supported"] = False
            doc["userinfo_endpoint"] = "https://graph.microsoft.com/oidc/userinfo"
        doc["authorization_endpoint"] = f"{oauth2}/authorize"
        doc["device_authorization_endpoint"] = f"{oauth2}/devicecode"
        doc["http_logout_supported"] = True
        doc["frontchannel_logout_supported"] = True
        doc["end_session_endpoint"] = f"{oauth2}/logout"
        doc["claims_supported"] = [*_CLAIMS_SUPPORTED, *(_CLAIMS_SUPPORTED_V1 if v1 else _CLAIMS_SUPPORTED_V2)]
        if v1:
            doc["check_session_iframe"] = f"{root}/oauth2/checksession"
            doc["userinfo_endpoint"] = f"{root}/openid/userinfo"
        doc["kerberos_endpoint"] = f"{root}/kerberos"
        doc["tenant_region_scope"] = "NA" if tid else None
        doc["cloud_instance_name"] = "microsoftonline.com"
        doc["cloud_graph_host_name"] = "graph.windows.net"
        doc["msgraph_host"] = "graph.microsoft.com"
        doc["rbac_url"] = "https://pas.windows.net"
        return self._discovery_json(doc)

    def _jwks(self, request: httpx2.Request, segment: str) -> httpx2.Response:
        resolved = self._resolve_segment(segment)
        if resolved is None:
            return self._unknown_tenant(segment)
        _, tid = resolved
        issuer = self._v2_issuer(tid)
        appid = (request.url.params.get("appid") or "").lower()
        with self.lock:
            # ?appid= for an app with its own signing keys serves exactly those keys (tokens for that app are
            # signed only with them); for any other app it is harmless and the tenant keys are served.
            keys = list(self._app_keys.get(appid) or self._keys)
        return self._discovery_json({"keys": [k.jwk(issuer) for k in keys]})
