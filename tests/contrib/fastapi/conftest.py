from __future__ import annotations

import pytest

from entra_mw.testing import FakeEntra

from .._support import Env, make_env

pytest.importorskip("fastapi")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def env(fake_entra: FakeEntra) -> Env:
    return make_env(fake_entra)
