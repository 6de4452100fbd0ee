"""Client credentials: how the app (the agent blueprint) proves its identity to Entra.

``EntraConfig(credentials=[...])`` takes a sequence, tried in order, as the sidecar's
``AzureAd__ClientCredentials__N__*`` are (spec §2.2). Each is a frozen value; secrets are never in ``repr``::

    from entra_mw import EntraConfig, ClientSecret, SignedAssertionFile

    config = EntraConfig(
        tenant_id="contoso.onmicrosoft.com",
        client_id="11111111-2222-3333-4444-555555555555",
        credentials=[SignedAssertionFile(), ClientSecret(os.environ["CLIENT_SECRET"])],
    )
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .errors import ConfigurationError

__all__ = [
    "AssertionCallback",
    "CertificateCredential",
    "ClientSecret",
    "Credential",
    "ManagedIdentityAssertion",
    "SignedAssertionFile",
]

#: The audience of the managed-identity or workload-identity token presented as a federated credential.
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


@dataclass(frozen=True, slots=True)
class ClientSecret:
    """A client secret (``SourceType=ClientSecret``), sent as ``client_secret`` in the token request body."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.value, str) or not self.value:
            raise ConfigurationError("ClientSecret needs a non-empty string", key="ClientSecret")


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateCredential:
    """A certificate with its private key, used to sign client assertions (``Path`` / ``Base64Encoded``).

    Give exactly one of ``path`` (a PEM or PFX/PKCS#12 file), ``pem`` (PEM text holding the key and the certificate)
    or ``base64`` (a base64-encoded PFX, as Key Vault exports it). ``send_x5c`` sends the certificate chain so Entra
    can use subject-name/issuer (SN/I) authentication.
    """

    path: str | None = None
    pem: str | None = field(default=None, repr=False)
    base64: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    send_x5c: bool = False

    def __post_init__(self) -> None:
        given = [n for n in ("path", "pem", "base64") if getattr(self, n)]
        if len(given) != 1:
            raise ConfigurationError(
                "CertificateCredential needs exactly one of path, pem or base64"
                + (f" (got {', '.join(given)})" if given else ""),
                key="CertificateCredential",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedAssertionFile:
    """A federated token read from a file (``SignedAssertionFilePath``): Kubernetes workload identity.

    ``path=None`` reads ``AZURE_FEDERATED_TOKEN_FILE`` (then ``AZURE_ACCESS_TOKEN_FILE``) when the assertion is
    needed. The file is re-read when it changes, since the kubelet rotates the projected token.
    """

    path: str | None = None

    def resolve_path(self, environ: dict[str, str] | None = None) -> str:
        env = os.environ if environ is None else environ
        path = self.path or env.get("AZURE_FEDERATED_TOKEN_FILE") or env.get("AZURE_ACCESS_TOKEN_FILE")
        if not path:
            raise ConfigurationError(
                "SignedAssertionFile has no path and AZURE_FEDERATED_TOKEN_FILE is not set",
                key="AZURE_FEDERATED_TOKEN_FILE",
            )
        return path


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagedIdentityAssertion:
    """A managed identity's token used as a federated client assertion (``SignedAssertionFromManagedIdentity``).

    ``client_id=None`` is the system-assigned identity; otherwise the user-assigned identity's client id. The token is
    requested for ``audience`` (``api://AzureADTokenExchange``) through MSAL's managed-identity client.
    """

    client_id: str | None = None
    audience: str = TOKEN_EXCHANGE_AUDIENCE


@dataclass(frozen=True, slots=True)
class AssertionCallback:
    """A callable returning a client assertion (a signed JWT), called for each token request that needs one.

    The callable takes no argument, or one ``dict`` with ``client_id``, ``token_endpoint`` and, for agent
    exchanges, ``fmi_path`` (MSAL's assertion-callback context).
    """

    fn: Callable[..., str] = field(repr=False)

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigurationError("AssertionCallback needs a callable", key="AssertionCallback")


Credential: TypeAlias = (
    ClientSecret | CertificateCredential | SignedAssertionFile | ManagedIdentityAssertion | AssertionCallback
)

CREDENTIAL_TYPES: tuple[type[Any], ...] = (
    ClientSecret,
    CertificateCredential,
    SignedAssertionFile,
    ManagedIdentityAssertion,
    AssertionCallback,
)
