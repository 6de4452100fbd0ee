"""FakeEntra: a faithful local Microsoft Entra ID for tests, examples and demos.

It serves instance discovery, v1/v2 OpenID metadata, JWKS (with the ``issuer`` key property, rotation and
``?appid=`` keys), the token endpoint, web sign-in (``/authorize`` with its sign-in and consent pages,
``/logout``) and a managed-identity endpoint, in process (``fake.transport`` / ``fake.async_transport``) or over
HTTPS on loopback (``fake.serve()``). The pytest plugin (entry point ``entra_mw``) provides the ``fake_entra``
and ``fake_clock`` fixtures.

Example::

    from entra_mw.testing import FakeEntra

    fake = FakeEntra()
    s = fake.quickstart()
    token = fake.user_token(s.user, client=s.client, resource=s.api)

Names are imported lazily so that loading the pytest plugin costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._clock import FakeClock
    from ._fake import FakeEntra, FaultRule, Faults, Scenario
    from ._registry import (
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
    )
    from ._serve import ServedFakeEntra

__all__ = [
    "AgentIdentity",
    "AgentUser",
    "App",
    "Certificate",
    "ConsentGrant",
    "FakeClock",
    "FakeEntra",
    "FaultRule",
    "Faults",
    "FederatedCredential",
    "Registry",
    "Scenario",
    "Secret",
    "ServedFakeEntra",
    "Tenant",
    "User",
]

_WHERE = {
    "FakeClock": "._clock",
    "FakeEntra": "._fake",
    "FaultRule": "._fake",
    "Faults": "._fake",
    "Scenario": "._fake",
    "ServedFakeEntra": "._serve",
    "AgentIdentity": "._registry",
    "AgentUser": "._registry",
    "App": "._registry",
    "Certificate": "._registry",
    "ConsentGrant": "._registry",
    "FederatedCredential": "._registry",
    "Registry": "._registry",
    "Secret": "._registry",
    "Tenant": "._registry",
    "User": "._registry",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
