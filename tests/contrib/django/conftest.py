from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("django")
pytest.importorskip("rest_framework")

from django.test import override_settings

from entra_mw.testing import FakeEntra

from ._django import World, configure, world

configure()


@pytest.fixture
def env(fake_entra: FakeEntra) -> Iterator[World]:
    """The integration configured for FakeEntra (in process, fake clock) through the settings users write."""
    w = world(fake_entra)
    with override_settings(ENTRA_MW=w.setting(), ENTRA_MW_AUTH_FACTORY=w.factory):
        yield w
    for auth in w.built:
        auth.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Django's async support is asyncio's
