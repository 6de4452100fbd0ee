"""The Django weather example over real sockets: under uvicorn (ASGI) and Django's threaded WSGI server, against
FakeEntra served over HTTPS and a recording forecast API on loopback. The app reads the sidecar's variables
(``ENTRA_MW = "env"``), exactly as ``python -m example_apps.django_weather`` runs it."""

from __future__ import annotations

import importlib
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("rest_framework")
uvicorn = pytest.importorskip("uvicorn")

import httpx2  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler  # noqa: E402
from django.test import override_settings  # noqa: E402
from example_apps.django_weather import settings as example  # noqa: E402
from example_apps.django_weather.sandbox import FORECAST_SCOPE, ForecastAPI, Sandbox  # noqa: E402

from ..contrib.django._django import configure  # noqa: E402

# The engine imports its parts on first use. Import them here, in the main thread: pytest rewrites the modules
# of plugins (entra_mw is one) as they are imported, and CPython 3.11.7's parser can fail doing that in a server
# thread (SystemError: AST constructor recursion depth mismatch, fixed in 3.11.8).
for _module in ("entra_mw._acquisition.engine", "entra_mw._downstream", "entra_mw._validation"):
    importlib.import_module(_module)

configure()

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
ROOT = Path(__file__).resolve().parents[2]


class World:
    def __init__(self, sandbox: Sandbox, forecast: ForecastAPI) -> None:
        self.sandbox = sandbox
        self.forecast = forecast


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Sandbox.start() as sandbox, ForecastAPI() as forecast, pytest.MonkeyPatch.context() as mp:
        for name, value in sandbox.environment(forecast.base_url).items():
            mp.setenv(name, value)
        with override_settings(
            ROOT_URLCONF=example.ROOT_URLCONF,
            MIDDLEWARE=example.MIDDLEWARE,
            REST_FRAMEWORK=example.REST_FRAMEWORK,
            ENTRA_MW=example.ENTRA_MW,
        ):
            yield World(sandbox, forecast)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def _serve_asgi() -> Iterator[int]:
    config = uvicorn.Config(ASGIHandler(), host="127.0.0.1", port=0, lifespan="off", log_config=None, log_level="info")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def _serve_wsgi() -> Iterator[int]:
    server = ThreadedWSGIServer(("127.0.0.1", 0), _QuietHandler, allow_reuse_address=False)
    server.set_app(WSGIHandler())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module", params=["asgi", "wsgi"])
def base(request: pytest.FixtureRequest, world: World) -> Iterator[str]:
    # A fresh engine per server (the setting is "changed"), built inside it on first use.
    with override_settings(ENTRA_MW=example.ENTRA_MW):
        for port in _serve_asgi() if request.param == "asgi" else _serve_wsgi():
            yield f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage()
        assert JWT.search(text) is None, f"a token in a log record from {record.name}"
        assert "Bearer " not in text or "Bearer error" in text, record.name


def get(base: str, path: str, token: str | None = None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx2.Client(timeout=30) as client:
        return client.get(base + path, headers=headers)


def test_no_token_gets_a_bare_challenge(world: World, base: str) -> None:
    for path in ("/forecast", "/stations", "/outlook", "/observations"):
        response = get(base, path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"


def test_valid_token(world: World, base: str) -> None:
    token = world.sandbox.user_token()
    response = get(base, "/forecast", token)
    assert response.status_code == 200
    assert response.json()["for"] == world.sandbox.scenario.user.upn
    response = get(base, "/observations", token)
    assert response.status_code == 200
    assert response.json()["caller"] == world.sandbox.scenario.user.upn


def test_wrong_audience_and_expired(world: World, base: str, caplog: pytest.LogCaptureFixture) -> None:
    s = world.sandbox
    foreign = s.fake.user_token(
        s.scenario.user, client=s.scenario.api, resource=s.forecast_app, scopes=[FORECAST_SCOPE]
    )
    expired = s.user_token(lifetime=-3600)
    for token in (foreign, expired):
        for path in ("/forecast", "/observations"):
            response = get(base, path, token)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            assert response.json()["error"] == "invalid_token"
    # The server threads' records reach caplog (so the no-token check above sees them), with their reasons.
    reasons = [r.getMessage() for r in caplog.records if r.name == "entra_mw.validation"]
    assert any("bad_audience" in m or "audience" in m for m in reasons), reasons
    assert any("expired" in m for m in reasons), reasons


def test_insufficient_scope_and_app_roles(world: World, base: str) -> None:
    user, app = world.sandbox.user_token(), world.sandbox.app_token()
    response = get(base, "/forecast", app)
    assert response.status_code == 403
    assert response.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    assert 'scope="Weather.Read"' in response.headers["www-authenticate"]
    response = get(base, "/stations", user)
    assert response.status_code == 403
    assert 'scope="Weather.Read.All"' in response.headers["www-authenticate"]

    response = get(base, "/stations", app)
    assert response.status_code == 200
    assert response.json()["client"] == world.sandbox.scenario.client.app_id
    response = get(base, "/observations", app)
    assert response.status_code == 200
    assert response.json()["app_only"] is True


def raw(base: str, *headers: bytes) -> tuple[int, bytes]:
    port = int(base.rsplit(":", 1)[1])
    lines = [b"GET /forecast HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    return int(data.split(b"\r\n", 1)[0].split()[1]), data


def test_duplicate_authorization_headers(world: World, base: str) -> None:
    auth = b"Authorization: Bearer " + world.sandbox.user_token().encode()
    assert raw(base, auth)[0] == 200
    status, data = raw(base, auth, auth)
    assert status == 400
    assert b'error="invalid_request"' in data


def test_keys_unavailable(world: World, base: str) -> None:
    fake = world.sandbox.fake
    token = world.sandbox.user_token()
    with override_settings(ENTRA_MW=example.ENTRA_MW):  # a new engine, with no keys yet
        fake.faults.outage("jwks")
        fake.faults.outage("discovery")
        try:
            response = get(base, "/forecast", token)
        finally:
            fake.faults.clear()
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert get(base, "/forecast").status_code == 401  # no token needs no keys
    assert get(base, "/forecast", token).status_code == 200


def test_on_behalf_of_reaches_the_forecast_api(world: World, base: str) -> None:
    s, forecast = world.sandbox, world.forecast
    caller = s.user_token()
    forecast.authorizations.clear()
    before = s.fake.request_count("token:jwt_bearer")
    for _ in range(2):
        response = get(base, "/outlook", caller)
        assert response.status_code == 200, response.text
        assert response.json()["outlook"]["path"] == "/outlook"
    assert s.fake.request_count("token:jwt_bearer") - before == 1
    assert len(forecast.authorizations) == 2
    assert forecast.authorizations[0] == forecast.authorizations[1]
    token = forecast.authorizations[0].removeprefix("Bearer ")
    assert token != caller
    claims = s.fake.decode(token)
    assert claims["aud"] == s.forecast_app.app_id
    assert claims["oid"] == s.scenario.user.object_id
    assert claims["scp"] == FORECAST_SCOPE


def test_readme_command_runs() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AzureAd__", "DownstreamApis__", "DJANGO_"))}
    env.pop("SSL_CERT_FILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "example_apps.django_weather", "--port", "0", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "curl -i http://127.0.0.1:" in done.stdout
    assert done.stdout.count(": 200") == 4
