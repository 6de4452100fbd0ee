"""The Django weather example over real sockets: under uvicorn (ASGI) and Django's threaded WSGI server, against
FakeEntra served over HTTPS and the forecast provider on loopback. The app reads the sidecar's variables
(``ENTRA_MW = "env"``), exactly as ``python -m example_apps.django_weather`` runs it."""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterator

import pytest
from example_apps._local import LocalTenant

from . import _weather

pytest.importorskip("django")
pytest.importorskip("rest_framework")
pytest.importorskip("uvicorn")

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings
from example_apps.django_weather import settings as example
from example_apps.django_weather.__main__ import UvicornServer, WSGIServer, sidecar_environment

from ..contrib.django._django import configure

# The engine imports its parts on first use. Import them here, in the main thread: pytest rewrites the modules
# of plugins (entra_mw is one) as they are imported, and CPython 3.11.7's parser can fail doing that in a server
# thread (SystemError: AST constructor recursion depth mismatch, fixed in 3.11.8).
for _module in ("entra_mw._acquisition.engine", "entra_mw._downstream", "entra_mw._validation"):
    importlib.import_module(_module)

configure()

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


@pytest.fixture
def tenant(tenant: LocalTenant, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalTenant]:
    """The local tenant, and Django set up as the example's settings say, reading this tenant's variables."""
    for name, value in sidecar_environment(tenant).items():
        monkeypatch.setenv(name, value)
    # Entering and leaving the override changes ENTRA_MW: a new engine for this tenant, closed afterwards.
    with override_settings(
        ROOT_URLCONF=example.ROOT_URLCONF,
        MIDDLEWARE=example.MIDDLEWARE,
        REST_FRAMEWORK=example.REST_FRAMEWORK,
        ENTRA_MW=example.ENTRA_MW,
    ):
        yield tenant


@pytest.fixture(params=["asgi", "wsgi"])
def port(request: pytest.FixtureRequest, tenant: LocalTenant) -> Iterator[int]:
    server = UvicornServer(ASGIHandler(), 0) if request.param == "asgi" else WSGIServer(WSGIHandler(), 0)
    try:
        yield server.start()
    finally:
        server.stop()


def test_refusals_grants_and_on_behalf_of(tenant: LocalTenant, port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _weather.check_refusals_and_grants(tenant, port)
    _weather.check_on_behalf_of(tenant, port, ("/forecast/provider", "/forecast/provider"))
    _weather.check_no_token_logged(tenant, caplog.records)
    for record in caplog.records:
        assert JWT.search(record.getMessage()) is None, f"a token in a log record of {record.name}"
    # The server threads' records did reach caplog (the checks above looked at them), with their reasons.
    reasons = " ".join(r.getMessage() for r in caplog.records if r.name == "entra_mw.validation")
    assert "expired" in reasons
    assert "audience" in reasons


def test_drf_view(tenant: LocalTenant, port: int) -> None:
    missing = _weather.get(port, "/observations")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    user = _weather.get(port, "/observations", tenant.user_token())
    assert user.status_code == 200
    assert user.json() == {"temperature_c": 14, "caller": tenant.scenario.user.upn, "app_only": False}
    assert _weather.get(port, "/observations", tenant.app_token()).json()["app_only"] is True
    scn = tenant.scenario
    foreign = tenant.fake.user_token(scn.user, client=scn.client, resource=tenant.provider_app)
    refused = _weather.get(port, "/observations", foreign)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert refused.json()["error"] == "invalid_token"
    assert _weather.get(port, "/healthz").json() == {"status": "ok"}


def test_keys_unavailable(tenant: LocalTenant, port: int) -> None:
    _weather.check_keys_unavailable(tenant, port)


def test_the_readme_command() -> None:
    _weather.run_the_readme_command("example_apps.django_weather")
