"""Everything the scenario needs, on this machine: FakeEntra over HTTPS with its managed-identity endpoint, the
two app registrations (the API exposing ``access_as_user``; the web app with no secret, trusting a user-assigned
managed identity through a federated credential), a test user, and the API and the web app served on loopback.

::

    with run_locally() as running:
        print(running.web_url, running.username, running.password)
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from werkzeug.serving import BaseWSGIServer, make_server

from entra_mw import DownstreamApi, EntraAuth, EntraConfig, ManagedIdentityAssertion, WebSignIn
from entra_mw.testing import FakeEntra, ServedFakeEntra

from .api import SCOPE, create_api
from .web import API, create_web_app

USERNAME = "alice@contoso.onmicrosoft.com"
PASSWORD = "P@ssw0rd!"  # a test user of the local FakeEntra, nothing real


@dataclass(frozen=True, slots=True, kw_only=True)
class Running:
    """The running scenario: where to point a browser and who to sign in as."""

    web_url: str
    api_url: str
    entra: ServedFakeEntra
    fake: FakeEntra
    tenant_id: str
    web_client_id: str
    api_client_id: str
    managed_identity_client_id: str
    username: str
    password: str

    @property
    def api_scope(self) -> str:
        return f"api://{self.api_client_id}/{SCOPE}"


def _serve(stack: ExitStack, host: str, port: int, app: object) -> BaseWSGIServer:
    # Bound here, so a busy port is an OSError for the command to report (werkzeug would print and exit).
    listener = stack.enter_context(socket.create_server((host, port)))
    server = make_server(host, port, app, threaded=True, fd=listener.fileno())  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, name=f"webapp_calls_api:{port}", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    stack.callback(stop)
    return server


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    # MSAL's managed-identity client reads IDENTITY_ENDPOINT / IDENTITY_HEADER from the process environment, as on
    # App Service and Container Apps.
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def run_locally(*, host: str = "127.0.0.1", web_port: int = 5000, api_port: int = 5001) -> Iterator[Running]:
    """Start FakeEntra, the API and the web app (ports 0: free ones); stop everything on exit."""
    fake = FakeEntra()
    tenant = fake.add_tenant(domain="contoso.onmicrosoft.com", display_name="Contoso")
    api_app = fake.add_app(tenant, display_name="webapp-calls-api API", scopes=(SCOPE,))
    # Loopback redirect URIs match any port (Entra's rule for http://localhost); "/" is where sign-out returns.
    web_app = fake.add_app(
        tenant,
        display_name="webapp-calls-api web app",
        redirect_uris=[
            "http://localhost/auth/callback",
            "http://127.0.0.1/auth/callback",
            "http://localhost/",
            "http://127.0.0.1/",
        ],
    )
    identity = fake.add_managed_identity(tenant, display_name="mi-webapp-federated")
    fake.trust_managed_identity(web_app, identity)  # the federated credential: no secret on the web app
    fake.add_user(tenant, upn=USERNAME, password=PASSWORD, display_name="Alice Example")
    with ExitStack() as stack:
        served = stack.enter_context(fake.serve())
        stack.callback(fake.close)
        stack.enter_context(_environ(served.managed_identity_env()))
        api_auth = stack.enter_context(
            EntraAuth(
                EntraConfig(tenant_id=tenant.tenant_id, client_id=api_app.app_id, instance=served.base_url),
                verify=served.ca_file,
            )
        )
        api_scope = f"api://{api_app.app_id}/{SCOPE}"
        api_server = _serve(stack, host, api_port, create_api(api_auth))
        api_url = f"http://127.0.0.1:{api_server.port}"
        web_auth = stack.enter_context(
            EntraAuth(
                EntraConfig(
                    tenant_id=tenant.tenant_id,
                    client_id=web_app.app_id,
                    instance=served.base_url,
                    credentials=[ManagedIdentityAssertion(client_id=identity.app_id)],
                    downstream_apis={API: DownstreamApi(base_url=f"{api_url}/", scopes=[api_scope])},
                ),
                verify=served.ca_file,
            )
        )
        web_server = _serve(stack, host, web_port, create_web_app(WebSignIn(web_auth, scopes=[api_scope])))
        yield Running(
            web_url=f"http://localhost:{web_server.port}/",
            api_url=api_url,
            entra=served,
            fake=fake,
            tenant_id=tenant.tenant_id,
            web_client_id=web_app.app_id,
            api_client_id=api_app.app_id,
            managed_identity_client_id=identity.app_id,
            username=USERNAME,
            password=PASSWORD,
        )
