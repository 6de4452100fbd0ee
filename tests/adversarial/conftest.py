"""The world the async adversarial modules share; the synchronous ones (real sockets, the sidecar under
Starlette's TestClient) override ``world`` with one that closes the engine's sync side."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from entra_mw.testing import FakeClock, FakeEntra

from ._adapters import World, make_world


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def world(fake_entra: FakeEntra, fake_clock: FakeClock) -> AsyncIterator[World]:
    world = make_world(fake_entra, fake_clock)
    yield world
    await world.auth.aclose()
