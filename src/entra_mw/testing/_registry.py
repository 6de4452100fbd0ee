"""FakeEntra's directory: tenants, app registrations, users, agent blueprints, agent identities and agent users.

Plain mutable records (it is a test double's database); the FakeEntra object owns one ``Registry`` and guards it
with a lock. Identifiers are GUIDs as in Entra; an app has both an app (client) id and a service-principal object
id, as Entra distinguishes them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "AgentIdentity",
    "AgentUser",
    "App",
    "Certificate",
    "ConsentGrant",
    "FederatedCredential",
    "Registry",
    "Secret",
    "Tenant",
    "User",
]


TEMPLATE_TENANTS: Final = frozenset({"common", "organizations"})
"""Path segments standing for any work or school tenant (``consumers`` is not served: no personal accounts)."""


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(eq=False)
class Tenant:
    tenant_id: str
    domain: str
    display_name: str = ""


@dataclass(eq=False)
class Secret:
    value: str = field(repr=False)
    key_id: str = field(default_factory=new_id)
    expires_at: float | None = None  # epoch seconds; expired secrets give AADSTS7000222


@dataclass(eq=False)
class Certificate:
    """A registered certificate's public part. ``pem`` is the certificate (no private key)."""

    pem: bytes
    thumbprint_sha1: str  # base64url of the SHA-1 of the DER (x5t)
    thumbprint_sha256: str  # base64url of the SHA-256 of the DER (x5t#S256)
    subject: str = ""
    key_id: str = field(default_factory=new_id)


@dataclass(eq=False)
class FederatedCredential:
    """A federated identity credential (FIC): trust tokens from ``issuer`` with ``subject`` and ``audiences``."""

    issuer: str
    subject: str
    audiences: tuple[str, ...] = ("api://AzureADTokenExchange",)
    name: str = ""


@dataclass(eq=False)
class ConsentGrant:
    """Delegated permission grant: ``client`` may call ``resource`` with ``scopes`` (for all users of the tenant,
    or for one user when ``user_oid`` is set)."""

    client_app_id: str
    resource_app_id: str
    scopes: frozenset[str]
    user_oid: str | None = None


@dataclass(eq=False)
class App:
    """An app registration together with its service principal in its home tenant.

    ``identifier_uris`` are the App ID URIs (``api://{app_id}`` is typical). ``access_token_version`` is the
    manifest's ``accessTokenAcceptedVersion`` (1 or 2): the version of tokens minted *for* this app as a resource.
    ``scopes`` are the delegated permissions it exposes; ``app_roles`` the application permissions it exposes.
    ``granted_roles`` maps a resource app id to the app roles this app (as a client) was granted there.
    ``kind`` marks agent blueprints and managed identities; agent identities are separate records
    (:class:`AgentIdentity`). ``redirect_uris`` are the registered reply URLs (web, SPA, and mobile & desktop
    platforms together); ``public_client`` marks a client with no credentials (mobile & desktop, CLI, MCP
    clients), which must use PKCE and may not present a secret. ``pre_authorized`` (on an API) maps a client
    app id to the scopes that client may use without anyone's consent ("Authorized client applications").
    ``mi_resource_id`` is a user-assigned managed identity's Azure resource id.
    """

    app_id: str
    tenant_id: str
    display_name: str
    sp_object_id: str = field(default_factory=new_id)
    identifier_uris: tuple[str, ...] = ()
    access_token_version: Literal[1, 2] = 2
    scopes: tuple[str, ...] = ()
    app_roles: tuple[str, ...] = ()
    granted_roles: dict[str, frozenset[str]] = field(default_factory=dict)
    secrets: list[Secret] = field(default_factory=list)
    certificates: list[Certificate] = field(default_factory=list)
    federated_credentials: list[FederatedCredential] = field(default_factory=list)
    kind: Literal["app", "blueprint", "managed_identity"] = "app"
    multi_tenant: bool = False
    optional_agent_claims: bool = True  # emit xms_par_app_azp & co. on agent tokens for this resource
    redirect_uris: list[str] = field(default_factory=list)
    public_client: bool = False
    pre_authorized: dict[str, frozenset[str]] = field(default_factory=dict)
    mi_resource_id: str = ""
    system_assigned: bool = False

    @property
    def is_blueprint(self) -> bool:
        return self.kind == "blueprint"

    @property
    def is_managed_identity(self) -> bool:
        return self.kind == "managed_identity"

    @property
    def principal_id(self) -> str:
        """The service principal's object id (a managed identity's "principal id", its tokens' ``sub``)."""
        return self.sp_object_id


@dataclass(eq=False)
class AgentIdentity:
    """An agent identity: a service principal with no credentials, owned by exactly one blueprint (spec §3.1)."""

    app_id: str  # the agent's client id (what fmi_path names)
    sp_object_id: str
    tenant_id: str
    blueprint_app_id: str
    display_name: str = ""
    granted_roles: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(eq=False)
class User:
    object_id: str
    tenant_id: str
    upn: str
    display_name: str = ""
    password: str | None = field(default=None, repr=False)  # test-only ROPC sign-in
    mfa_required: bool = False  # OBO for this user yields interaction_required + claims challenge


@dataclass(eq=False)
class AgentUser:
    """A user object whose ``identityParentId`` is an agent identity; it signs in only through ``user_fic``."""

    object_id: str
    tenant_id: str
    upn: str
    agent_app_id: str
    display_name: str = ""


class Registry:
    """The directory. Lookups are by id (case-insensitive GUIDs) or by domain / UPN."""

    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[str, App] = {}
        self.agents: dict[str, AgentIdentity] = {}
        self.users: dict[str, User] = {}
        self.agent_users: dict[str, AgentUser] = {}
        self.consents: list[ConsentGrant] = []

    # -- lookups -------------------------------------------------------------------------------------------

    def tenant(self, id_or_domain: str) -> Tenant | None:
        key = id_or_domain.lower()
        found = self.tenants.get(key)
        if found is not None:
            return found
        for tenant in self.tenants.values():
            if tenant.domain.lower() == key:
                return tenant
        return None

    def app(self, app_id: str) -> App | None:
        return self.apps.get(app_id.lower())

    def app_by_identifier(self, value: str) -> App | None:
        """Resolve a resource by app id or App ID URI (``api://x``, ``https://graph.microsoft.com``)."""
        low = value.lower().rstrip("/")
        found = self.apps.get(low)
        if found is not None:
            return found
        for app in self.apps.values():
            if any(uri.lower().rstrip("/") == low for uri in app.identifier_uris):
                return app
        return None

    def agent(self, app_id: str) -> AgentIdentity | None:
        return self.agents.get(app_id.lower())

    def user(self, oid_or_upn: str) -> User | None:
        key = oid_or_upn.lower()
        found = self.users.get(key)
        if found is not None:
            return found
        for user in self.users.values():
            if user.upn.lower() == key:
                return user
        return None

    def agent_user(self, oid_or_upn: str) -> AgentUser | None:
        key = oid_or_upn.lower()
        found = self.agent_users.get(key)
        if found is not None:
            return found
        for user in self.agent_users.values():
            if user.upn.lower() == key:
                return user
        return None

    def consented_scopes(self, client_app_id: str, resource_app_id: str, user_oid: str | None) -> frozenset[str]:
        out: set[str] = set()
        for grant in self.consents:
            if grant.client_app_id.lower() != client_app_id.lower():
                continue
            if grant.resource_app_id.lower() != resource_app_id.lower():
                continue
            if grant.user_oid is not None and (user_oid is None or grant.user_oid.lower() != user_oid.lower()):
                continue
            out.update(grant.scopes)
        resource = self.apps.get(resource_app_id.lower())
        if resource is not None:
            out.update(resource.pre_authorized.get(client_app_id.lower(), frozenset()))
        return frozenset(out)
