"""The example running locally: FakeEntra over HTTPS, the MCP server and the forecast API under uvicorn on
127.0.0.1, and the directory they need (what an administrator registers in a real tenant, docs/mcp.md)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx2
import uvicorn

from entra_mw import ClientSecret, DownstreamApi, EntraAuth, EntraConfig
from entra_mw.testing import App, FakeEntra, ServedFakeEntra, Tenant, User

from .server import FORECAST_SCOPE, SERVER_SCOPE, Recorder, build_forecast_api, build_mcp_app, closing, mount


@dataclass
class Directory:
    """The registrations: the MCP server's app (App ID URI = its URL, scopes ``Tools.Use`` and
    ``Forecast.Read``, a secret for On-Behalf-Of), the forecast API, a public MCP client pre-authorized for the
    server's scopes, and alice."""

    tenant: Tenant
    server: App
    server_secret: str = field(repr=False)
    forecast_api: App
    client: App
    user: User
    password: str = field(repr=False)


def register(fake: FakeEntra, *, resource: str) -> Directory:
    tenant = fake.add_tenant(domain="contoso.onmicrosoft.com", display_name="Contoso")
    server = fake.add_app(
        tenant, display_name="forecast-mcp", identifier_uris=[resource], scopes=(SERVER_SCOPE, FORECAST_SCOPE)
    )
    secret = fake.add_secret(server)
    forecast_api = fake.add_app(tenant, display_name="forecast-api", scopes=(FORECAST_SCOPE,))
    fake.grant_consent(server, forecast_api, forecast_api.scopes)
    # The MCP client: a public client (no secret, PKCE) with a loopback redirect URI, pre-authorized for the
    # server's scopes so alice is never asked to consent (there is no dynamic client registration in Entra).
    client = fake.add_public_client(tenant, display_name="mcp-client", redirect_uris=["http://localhost/callback"])
    fake.pre_authorize(server, client, server.scopes)
    password = "P@ssw0rd!"
    user = fake.add_user(tenant, upn=f"alice@{tenant.domain}", password=password, display_name="Alice Example")
    return Directory(
        tenant=tenant,
        server=server,
        server_secret=secret,
        forecast_api=forecast_api,
        client=client,
        user=user,
        password=password,
    )


class LocalStack:
    """FakeEntra served over HTTPS and one uvicorn on 127.0.0.1 serving the MCP server at ``/mcp`` and the
    forecast API at ``/forecast-api``; a context manager that stops everything it started."""

    def __init__(self) -> None:
        self.fake = FakeEntra()
        # Served as the issuer: the authorization server an MCP client discovers (https://127.0.0.1:{port}/{tenant}
        # /v2.0) is the issuer of the OpenID configuration it then fetches, as RFC 8414 §3.3 requires.
        self.served: ServedFakeEntra = self.fake.serve(as_issuer=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.resource = f"{self.base_url}/mcp"
        self.directory = register(self.fake, resource=self.resource)
        self.recorder = Recorder()
        d = self.directory
        self.auth = EntraAuth(
            EntraConfig(
                tenant_id=d.tenant.tenant_id,
                client_id=d.server.app_id,
                instance=self.served.base_url,
                audiences=(self.resource,),
                credentials=[ClientSecret(d.server_secret)],
                downstream_apis={
                    "forecast": DownstreamApi(
                        base_url=f"{self.base_url}/forecast-api/",
                        scopes=(f"api://{d.forecast_api.app_id}/{FORECAST_SCOPE}",),
                    )
                },
            ),
            verify=self.served.ca_file,
        )
        self.api_auth = EntraAuth(
            EntraConfig(tenant_id=d.tenant.tenant_id, client_id=d.forecast_api.app_id, instance=self.served.base_url),
            verify=self.served.ca_file,
        )
        app = closing(
            mount(
                {"/forecast-api": build_forecast_api(self.api_auth, self.recorder)},
                build_mcp_app(self.auth, resource=self.resource),
            ),
            self.auth,
            self.api_auth,
        )
        config = uvicorn.Config(app, lifespan="on", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> LocalStack:
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            self.thread.join(0.01)
        self.close()
        raise RuntimeError("the MCP server did not start")

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(10)
        self.sock.close()
        self.auth.close()
        self.api_auth.close()
        self.served.close()
        self.fake.close()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- what an MCP client does after the user signs in -------------------------------------------------------

    def sign_in(self, scopes: list[str]) -> str:
        """alice's token for the MCP server with ``scopes`` (short names), from FakeEntra's token endpoint as
        the pre-registered public client (the test-only password grant stands in for the browser sign-in)."""
        d = self.directory
        wanted = " ".join(f"{self.resource}/{s}" for s in scopes)
        with httpx2.Client(verify=self.served.ssl_context()) as client:
            response = client.post(
                f"{self.served.base_url}{d.tenant.tenant_id}/oauth2/v2.0/token",
                data={
                    "grant_type": "password",
                    "client_id": d.client.app_id,
                    "username": d.user.upn,
                    "password": d.password,
                    "scope": wanted,
                },
            )
        body: dict[str, Any] = response.json()
        if response.status_code != 200:
            raise RuntimeError(f"sign-in failed: {body.get('error')}: {body.get('error_description')}")
        token: str = body["access_token"]
        return token
