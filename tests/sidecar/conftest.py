"""Module-wide loopback servers for the sidecar tests: FakeEntra over HTTPS, the recording downstream API and a
sidecar with the default settings. Tests that need other settings start their own sidecar."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from entra_mw.testing import FakeEntra, Scenario, ServedFakeEntra

from ._support import Recorder, running, running_sidecar, sidecar_env


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeEntra]:
    # The system clock: the sidecar validates with it, so tokens must be minted in real time.
    fake = FakeEntra()
    fake.quickstart()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture(scope="module")
def scn(fake: FakeEntra) -> Scenario:
    return fake.quickstart()


@pytest.fixture(scope="module")
def served(fake: FakeEntra) -> Iterator[ServedFakeEntra]:
    with fake.serve() as served:
        yield served


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def api_url(recorder: Recorder) -> Iterator[str]:
    with running(recorder.app()) as url:
        yield url


@pytest.fixture(scope="module")
def sidecar(served: ServedFakeEntra, scn: Scenario, api_url: str) -> Iterator[str]:
    with running_sidecar(sidecar_env(served, scn, api_url)) as url:
        yield url


@pytest.fixture
def client(sidecar: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=sidecar, timeout=20) as client:
        yield client


StartSidecar = Callable[..., httpx2.Client]


@pytest.fixture
def start_sidecar(served: ServedFakeEntra, scn: Scenario, api_url: str) -> Iterator[StartSidecar]:
    """Start a sidecar with extra variables (``start_sidecar(Sidecar__AllowOutboundRedirects="true")``); returns
    a client for it. Everything stops at the end of the test."""
    with contextlib.ExitStack() as stack:

        def start(**extra: Any) -> httpx2.Client:
            url = stack.enter_context(running_sidecar(sidecar_env(served, scn, api_url, **extra)))
            return stack.enter_context(httpx2.Client(base_url=url, timeout=20))

        yield start
