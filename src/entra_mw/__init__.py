"""entra_mw: Microsoft Entra ID for Python web apps, APIs and MCP servers, in-process.

Validate bearer tokens against cached keys, get tokens for downstream APIs (client credentials, On-Behalf-Of and the
agent-identity flows) and call those APIs, with no sidecar container. ``entra_mw.testing.FakeEntra`` is a faithful
local Entra ID for tests and demos.
"""

from __future__ import annotations

import logging as _logging
import typing as _typing

from ._config import DownstreamApi, EntraConfig
from ._context import AuthContext
from ._engine import EntraAuth
from ._principal import Principal
from ._requirements import Requirement
from ._signin import MemorySessionStore, SignInError, SignInRequired, User, WebSignIn
from ._signin_redis import RedisSessionStore
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
    Challenge,
    ConfigurationError,
    DownstreamCallError,
    DownstreamRequestError,
    EntraError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    ProviderUnavailable,
    TokenAcquisitionError,
)

# A library adds no handlers of its own (the application configures logging); this one only keeps Python from
# printing records on stderr when nothing is configured.
_logging.getLogger("entra_mw").addHandler(_logging.NullHandler())

if _typing.TYPE_CHECKING:
    from ._downstream import Downstream

__all__ = [
    "AssertionCallback",
    "AuthContext",
    "AuthError",
    "CertificateCredential",
    "Challenge",
    "ClientSecret",
    "ConfigurationError",
    "Downstream",
    "DownstreamApi",
    "DownstreamCallError",
    "DownstreamRequestError",
    "EntraAuth",
    "EntraConfig",
    "EntraError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "ManagedIdentityAssertion",
    "MemorySessionStore",
    "MissingToken",
    "Principal",
    "ProviderUnavailable",
    "RedisSessionStore",
    "Requirement",
    "SignInError",
    "SignInRequired",
    "SignedAssertionFile",
    "TokenAcquisitionError",
    "User",
    "WebSignIn",
    "__version__",
]


def __getattr__(name: str) -> _typing.Any:
    # Downstream pulls in the acquisition engine (MSAL, httpx2's clients); import it only when asked for.
    if name == "Downstream":
        from ._downstream import Downstream

        return Downstream
    raise AttributeError(f"module 'entra_mw' has no attribute {name!r}")
