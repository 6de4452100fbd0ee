from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from entra_mw import EntraAuth, EntraConfig
from entra_mw.testing import FakeClock, FakeEntra

from ._support import MakeAuth


@pytest.fixture
def make_auth(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[MakeAuth]:
    """Builds engines for the quickstart API (``overrides`` are ``EntraConfig`` fields; ``transport`` replaces
    FakeEntra's sync transport); every engine built is closed at the end."""
    built: list[EntraAuth] = []

    def make(*, transport: httpx2.BaseTransport | None = None, **overrides: Any) -> EntraAuth:
        s = fake_entra.quickstart()
        options: dict[str, Any] = {"tenant_id": s.tenant.tenant_id, "client_id": s.api.app_id}
        options.update(overrides)
        auth = EntraAuth(
            EntraConfig(**options),
            transport=transport or fake_entra.transport,
            async_transport=fake_entra.async_transport,
            clock=fake_clock,
        )
        built.append(auth)
        return auth

    yield make
    for auth in built:
        auth.close()


@pytest.fixture
def auth(make_auth: MakeAuth) -> EntraAuth:
    return make_auth()
