"""The FastAPI weather example under uvicorn on loopback, against FakeEntra served over HTTPS."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from example_apps._local import LocalTenant

from . import _weather

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from example_apps._local import UvicornServer
from example_apps.fastapi_weather.app import create_app

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]


@pytest.fixture
def port(tenant: LocalTenant) -> Iterator[int]:
    server = UvicornServer(create_app(tenant.auth()), 0)
    try:
        yield server.start()
    finally:
        server.stop()


def test_refusals_and_grants(tenant: LocalTenant, port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _weather.check_refusals_and_grants(tenant, port)
    _weather.check_on_behalf_of(tenant, port, ("/forecast/provider", "/alerts"))
    _weather.check_no_token_logged(tenant, caplog.records)


def test_keys_unavailable(tenant: LocalTenant, port: int) -> None:
    _weather.check_keys_unavailable(tenant, port)


def test_the_readme_command() -> None:
    _weather.run_the_readme_command("example_apps.fastapi_weather")
