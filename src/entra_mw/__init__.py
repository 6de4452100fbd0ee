"""entra_mw: Microsoft Entra ID for Python web apps, APIs and MCP servers, in-process.

Validate bearer tokens against cached keys, get tokens for downstream APIs (client credentials, On-Behalf-Of and the
agent-identity flows) and call those APIs, with no sidecar container. ``entra_mw.testing.FakeEntra`` is a faithful
local Entra ID for tests and demos.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import DownstreamApi, EntraConfig
from ._engine import EntraAuth
from ._principal import Principal
from ._requirements import Requirement
from ._version import __version__
from .credentials import (
    AssertionCallback,
    CertificateCredential,
    ClientSecret,
    ManagedIdentityAssertion,
    SignedAssertionFile,
)
from .errors import (
    AuthError,
    ConfigurationError,
    EntraError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    ProviderUnavailable,
    TokenAcquisitionError,
)

if TYPE_CHECKING:
    from ._context import AuthContext
    from ._downstream import Downstream

__all__ = [
    "AssertionCallback",
    "AuthContext",
    "AuthError",
    "CertificateCredential",
    "ClientSecret",
    "ConfigurationError",
    "Downstream",
    "DownstreamApi",
    "EntraAuth",
    "EntraConfig",
    "EntraError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "ManagedIdentityAssertion",
    "MissingToken",
    "Principal",
    "ProviderUnavailable",
    "Requirement",
    "SignedAssertionFile",
    "TokenAcquisitionError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Downstream and AuthContext pull in the acquisition engine (MSAL); import them only when asked for.
    if name == "Downstream":
        from ._downstream import Downstream

        return Downstream
    if name == "AuthContext":
        from ._context import AuthContext

        return AuthContext
    raise AttributeError(f"module 'entra_mw' has no attribute {name!r}")
