"""A local tenant for the weather examples: FakeEntra over HTTPS on loopback, the weather API's registration (with
a secret, so it can call On-Behalf-Of), and a "forecast provider" the weather API calls downstream.

The provider is a plain stdlib server that checks its own bearer tokens with the entra_mw core, so the examples
need nothing beyond their own framework. Everything here is a fake directory: its secrets and tokens are worthless
anywhere else.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol, TextIO

from entra_mw import DownstreamApi, EntraAuth, EntraConfig, EntraError
from entra_mw.credentials import ClientSecret
from entra_mw.testing import App, FakeEntra, Scenario, ServedFakeEntra

__all__ = ["ForecastProvider", "LocalTenant", "Server", "local_tenant", "run_example"]

PROVIDER_SCOPE = "Forecast.Read"


class _ProviderServer(ThreadingHTTPServer):
    daemon_threads = True
    provider: ForecastProvider


class _ProviderHandler(BaseHTTPRequestHandler):
    server: _ProviderServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # request lines are not interesting here, and headers are never logged

    def do_GET(self) -> None:
        provider = self.server.provider
        try:
            ctx = provider.auth.authenticate(self.headers.get_all("Authorization"))
            principal = ctx.require()
        except EntraError as exc:
            self._answer(exc.status_code, exc.body(), exc.headers())
            return
        provider.record(self.path, ctx.token or "")
        body = {
            "provider": "contoso-forecast",
            "path": self.path,
            "for_user": principal.preferred_username or principal.oid,
            "forecast": [{"day": "Mon", "summary": "Sunny", "celsius": 21}, {"day": "Tue", "summary": "Rain"}],
        }
        self._answer(200, json.dumps(body).encode(), [("Content-Type", "application/json")])

    def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class ForecastProvider:
    """The downstream API: accepts only tokens issued for its own registration, and records what reached it."""

    auth: EntraAuth
    calls: list[tuple[str, str]] = field(default_factory=list)  # (path, bearer token) per accepted request
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: _ProviderServer | None = None
    _thread: threading.Thread | None = None

    def record(self, path: str, token: str) -> None:
        with self._lock:
            self.calls.append((path, token))

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def start(self) -> None:
        server = _ProviderServer(("127.0.0.1", 0), _ProviderHandler)
        server.provider = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self.auth.close()


@dataclass
class LocalTenant:
    """FakeEntra served on loopback with the quickstart directory, plus what the weather examples need: the weather
    API's client secret, the provider's registration (scope ``Forecast.Read``, consented for the weather API) and
    the running provider."""

    fake: FakeEntra
    served: ServedFakeEntra
    scenario: Scenario
    provider_app: App
    api_secret: str
    provider: ForecastProvider

    @classmethod
    def start(cls, fake: FakeEntra | None = None) -> LocalTenant:
        fake = fake or FakeEntra()
        scn = fake.quickstart()
        api_secret = fake.add_secret(scn.api)
        provider_app = fake.add_app(scn.tenant, display_name="forecast-provider", scopes=(PROVIDER_SCOPE,))
        fake.grant_consent(scn.api, provider_app, provider_app.scopes)
        served = fake.serve()
        provider_auth = EntraAuth(
            EntraConfig(tenant_id=scn.tenant.tenant_id, client_id=provider_app.app_id, instance=served.base_url),
            verify=served.ca_file,
        )
        provider = ForecastProvider(auth=provider_auth)
        provider.start()
        return cls(
            fake=fake,
            served=served,
            scenario=scn,
            provider_app=provider_app,
            api_secret=api_secret,
            provider=provider,
        )

    def close(self) -> None:
        self.provider.close()
        self.served.close()
        self.fake.close()

    def settings(self) -> dict[str, Any]:
        """The weather API's settings in :meth:`EntraConfig.from_mapping` form (Flask's ``ENTRA_MW``)."""
        scn = self.scenario
        return {
            "tenant_id": scn.tenant.tenant_id,
            "client_id": scn.api.app_id,
            "instance": self.served.base_url,
            "credentials": [{"client_secret": self.api_secret}],
            "downstream_apis": {
                "provider": {
                    "base_url": self.provider.base_url,
                    "scopes": [f"{self.provider_app.identifier_uris[0]}/{PROVIDER_SCOPE}"],
                }
            },
        }

    def config(self) -> EntraConfig:
        """The weather API's :class:`EntraConfig` (the same settings, as objects)."""
        scn = self.scenario
        return EntraConfig(
            tenant_id=scn.tenant.tenant_id,
            client_id=scn.api.app_id,
            instance=self.served.base_url,
            credentials=[ClientSecret(self.api_secret)],
            downstream_apis={
                "provider": DownstreamApi(
                    base_url=self.provider.base_url,
                    scopes=(f"{self.provider_app.identifier_uris[0]}/{PROVIDER_SCOPE}",),
                )
            },
        )

    def auth(self, config: EntraConfig | None = None, **kwargs: Any) -> EntraAuth:
        """An engine for ``config`` (default: the weather API's) that trusts this FakeEntra's CA."""
        return EntraAuth(config or self.config(), verify=self.served.ca_file, **kwargs)

    def user_token(self, **kwargs: Any) -> str:
        """Alice's token for the weather API, as the weather client got it (scope ``Weather.Read``)."""
        scn = self.scenario
        return self.fake.user_token(scn.user, client=scn.client, resource=scn.api, **kwargs)

    def app_token(self, **kwargs: Any) -> str:
        """The weather client's app-only token for the weather API (app role ``Weather.Read.All``)."""
        scn = self.scenario
        return self.fake.app_token(scn.client, resource=scn.api, **kwargs)

    def curl_lines(self, base_url: str) -> list[str]:
        """curl commands that work against the running example (the tokens are from this fake tenant)."""
        user = self.user_token()
        app = self.app_token()
        return [
            f"curl -s {base_url}forecast -H 'Authorization: Bearer {user}'",
            f"curl -s {base_url}forecast/provider -H 'Authorization: Bearer {user}'",
            f"curl -s {base_url}stations -H 'Authorization: Bearer {app}'",
            f"curl -si {base_url}forecast",
        ]


class UvicornServer:
    """An ASGI app under uvicorn on 127.0.0.1, in a background thread (uvicorn is imported here, so the WSGI
    examples do not need it). ``log_config=None`` leaves logging to the app (Django configures its own)."""

    def __init__(
        self, app: Any, port: int, *, lifespan: Literal["on", "off"] = "on", log_level: str = "warning", **config: Any
    ) -> None:
        import uvicorn

        options = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan, log_level=log_level, **config)
        self.server = uvicorn.Server(options)
        self.thread = threading.Thread(target=self.server.run, name="weather-api", daemon=True)

    def start(self) -> int:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise SystemExit("uvicorn did not start (is the port free?)")
            self.thread.join(0.02)
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Server(Protocol):
    """What each example runs: ``start`` serves in the background and returns the port; ``stop`` ends it."""

    def start(self) -> int: ...

    def stop(self) -> None: ...


def run_example(title: str, tenant: LocalTenant, server: Server, *, out: TextIO = sys.stdout) -> None:
    """Serve until Ctrl+C (or SIGTERM), after printing where everything runs and curl commands that work."""
    stopped = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    port = server.start()
    try:
        base_url = f"http://127.0.0.1:{port}/"
        out.write(f"{title} is serving at {base_url}\n")
        out.write(f"  FakeEntra (HTTPS)  {tenant.served.base_url}  tenant {tenant.scenario.tenant.domain}\n")
        out.write(f"  forecast provider  {tenant.provider.base_url}  (the downstream API, called On-Behalf-Of)\n")
        out.write("Try it (tokens from the local fake tenant, valid for an hour):\n")
        for line in tenant.curl_lines(base_url):
            out.write(f"  {line}\n")
        out.write("Press Ctrl+C to stop.\n")
        out.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while not stopped.wait(0.5):
                pass
    finally:
        server.stop()


@contextlib.contextmanager
def local_tenant() -> Iterator[LocalTenant]:
    """A started :class:`LocalTenant`, closed on exit."""
    tenant = LocalTenant.start()
    try:
        yield tenant
    finally:
        tenant.close()
