"""``python -m example_apps.django_weather [--port 8000] [--wsgi]``: the weather API (Django under uvicorn, or
Django's threaded WSGI server) against a local FakeEntra, printing curl commands that work."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

from .._local import PROVIDER_SCOPE, LocalTenant, local_tenant, run_example
from .._local import UvicornServer as _UvicornServer

SETTINGS_MODULE = "example_apps.django_weather.settings"


def sidecar_environment(tenant: LocalTenant) -> dict[str, str]:
    """The official sidecar's variables for the weather API on the local tenant (what ``ENTRA_MW = "env"``
    reads), and ``SSL_CERT_FILE`` so its HTTPS client trusts the local CA."""
    scn = tenant.scenario
    return {
        "AzureAd__Instance": tenant.served.base_url,
        "AzureAd__TenantId": scn.tenant.tenant_id,
        "AzureAd__ClientId": scn.api.app_id,
        "AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
        "AzureAd__ClientCredentials__0__ClientSecret": tenant.api_secret,
        "DownstreamApis__provider__BaseUrl": tenant.provider.base_url,
        "DownstreamApis__provider__Scopes__0": f"{tenant.provider_app.identifier_uris[0]}/{PROVIDER_SCOPE}",
        "SSL_CERT_FILE": tenant.served.ca_file,
    }


class UvicornServer(_UvicornServer):
    """Django's ASGI application under uvicorn on 127.0.0.1, in a background thread."""

    def __init__(self, app: Any, port: int) -> None:
        # Django has no lifespan support; log_config=None leaves logging to Django's settings.
        super().__init__(app, port, lifespan="off", log_level="info", log_config=None)


class WSGIServer:
    """Django's WSGI application under Django's own threaded WSGI server (wsgiref) on 127.0.0.1."""

    def __init__(self, app: Any, port: int) -> None:
        from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

        self.server = ThreadedWSGIServer(("127.0.0.1", port), WSGIRequestHandler, allow_reuse_address=False)
        self.server.set_app(app)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="weather-api", daemon=True
        )

    def start(self) -> int:
        self.thread.start()
        port: int = self.server.server_address[1]
        return port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_apps.django_weather")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--wsgi", action="store_true", help="serve with Django's WSGI server instead of uvicorn")
    args = parser.parse_args(argv)
    with local_tenant() as tenant:
        os.environ.update(sidecar_environment(tenant))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
        if args.wsgi:
            from .wsgi import application as wsgi_app

            server: UvicornServer | WSGIServer = WSGIServer(wsgi_app, args.port)
        else:
            from .asgi import application as asgi_app

            server = UvicornServer(asgi_app, args.port)
        run_example("The Django weather API", tenant, server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
