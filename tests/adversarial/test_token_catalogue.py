"""Each attack token of the catalogue, sent as ``Authorization: Bearer <token>`` to every adapter: the verdict is
the core's (the same through every adapter), each answer keeps the rules, and neither the answer nor any log
record carries the token."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from entra_mw.testing import FakeClock, FakeEntra

from ._adapters import ADAPTERS, Adapters, World, make_world
from ._catalogue import catalogue
from ._catalogue import expected as allowed
from ._rules import check_reply, token_parts

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def world(fake_entra: FakeEntra, fake_clock: FakeClock) -> AsyncIterator[World]:
    world = make_world(fake_entra, fake_clock)
    yield world
    await world.auth.aclose()


async def test_every_adapter_gives_the_cores_verdict(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapters = Adapters(world)
    tokens = catalogue(world)
    mismatches: list[str] = []
    async with adapters.running():
        for name, token in tokens:
            header = f"Bearer {token}".encode("latin-1")
            expected = world.verdict(header)
            if expected not in allowed(name):
                mismatches.append(f"core: {name}: {expected}")
            for adapter in ADAPTERS:
                reply = await adapters.send(adapter, [(b"authorization", header)])
                check_reply(adapter, reply, token_parts(token))
                if reply.status != expected:
                    mismatches.append(f"{adapter}: {name}: {reply.status} (core {expected})")
    assert not mismatches, "\n".join(mismatches)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for name, token in tokens:
        for part in token_parts(token):
            assert part not in logged, name
