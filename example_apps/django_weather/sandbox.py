"""The world the example runs in: FakeEntra over HTTPS with the quickstart directory plus a "forecast" API the
weather API may call On-Behalf-Of its callers, and that forecast API itself (a recording stub on loopback)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from entra_mw.testing import App, FakeEntra, Scenario, ServedFakeEntra

__all__ = ["FORECAST_SCOPE", "ForecastAPI", "Sandbox"]

FORECAST_SCOPE = "Forecast.Read"


class _ForecastHandler(BaseHTTPRequestHandler):
    server: _ForecastServer

    def do_GET(self) -> None:
        self.server.authorizations.append(self.headers.get("Authorization", ""))
        body = json.dumps({"path": self.path, "days": ["sunny", "showers", "sunny"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # request lines are not worth logging here


class _ForecastServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ForecastHandler)
        self.authorizations: list[str] = []


class ForecastAPI:
    """The downstream "forecast" API on ``127.0.0.1``: answers any GET with a JSON forecast and records the
    ``Authorization`` header of every call in :attr:`authorizations` (so tests can check which token came)."""

    def __init__(self) -> None:
        self._server = _ForecastServer()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def authorizations(self) -> list[str]:
        return self._server.authorizations

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> ForecastAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Sandbox:
    """FakeEntra (served over HTTPS) whose quickstart weather API also has a secret and the right to call the
    forecast API On-Behalf-Of its users. :meth:`environment` is what the app reads (the sidecar's variables)."""

    fake: FakeEntra
    scenario: Scenario
    served: ServedFakeEntra
    forecast_app: App
    api_secret: str = field(repr=False)

    @classmethod
    def start(cls, fake: FakeEntra | None = None) -> Sandbox:
        fake = fake if fake is not None else FakeEntra()
        scenario = fake.quickstart()
        api_secret = fake.add_secret(scenario.api)
        forecast_app = fake.add_app(scenario.tenant, display_name="forecast-api", scopes=(FORECAST_SCOPE,))
        fake.grant_consent(scenario.api, forecast_app, [FORECAST_SCOPE])
        return cls(fake=fake, scenario=scenario, served=fake.serve(), forecast_app=forecast_app, api_secret=api_secret)

    def environment(self, forecast_base_url: str) -> dict[str, str]:
        """The official sidecar's variables for the weather API, plus ``SSL_CERT_FILE`` (FakeEntra's CA)."""
        return {
            "AzureAd__Instance": self.served.base_url,
            "AzureAd__TenantId": self.scenario.tenant.tenant_id,
            "AzureAd__ClientId": self.scenario.api.app_id,
            "AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
            "AzureAd__ClientCredentials__0__ClientSecret": self.api_secret,
            "DownstreamApis__forecast__BaseUrl": forecast_base_url,
            "DownstreamApis__forecast__Scopes__0": f"{self.forecast_app.identifier_uris[0]}/{FORECAST_SCOPE}",
            "SSL_CERT_FILE": self.served.ca_file,
        }

    def user_token(self, **kw: Any) -> str:
        """Alice's token for the weather API (``Weather.Read``), as the weather client would get it."""
        s = self.scenario
        kw.setdefault("scopes", ["Weather.Read"])
        return self.fake.user_token(s.user, client=s.client, resource=s.api, **kw)

    def app_token(self, **kw: Any) -> str:
        """The weather client's app-only token for the weather API (app role ``Weather.Read.All``)."""
        return self.fake.app_token(self.scenario.client, resource=self.scenario.api, **kw)

    def close(self) -> None:
        self.served.close()
        self.fake.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
