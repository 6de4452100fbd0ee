"""``python -m example_apps.flask_weather [--port 5000]``: the weather API under werkzeug's server against a
local FakeEntra, printing curl commands that work."""

from __future__ import annotations

import argparse
import sys
import threading

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from entra_mw import EntraAuth, EntraConfig

from .._local import LocalTenant, local_tenant, run_example
from .app import create_app


class QuietPathHandler(WSGIRequestHandler):
    """Logs method, path and status only: a query string never reaches the log (it could carry a token)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log("info", '"%s %s" %s', self.command, self.path.partition("?")[0], code)


class WerkzeugServer:
    """werkzeug's threaded WSGI server on 127.0.0.1 in a background thread."""

    def __init__(self, app: Flask, port: int) -> None:
        self.server = make_server("127.0.0.1", port, app, threaded=True, request_handler=QuietPathHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="weather-api", daemon=True)

    def start(self) -> int:
        self.thread.start()
        return self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def app_for(tenant: LocalTenant) -> Flask:
    """The example app configured for ``tenant``: the settings as a mapping, and a factory that trusts the local
    FakeEntra's CA (what ``ENTRA_MW_AUTH_FACTORY`` is for)."""

    def build(config: EntraConfig) -> EntraAuth:
        return EntraAuth(config, verify=tenant.served.ca_file)

    return create_app({"ENTRA_MW": tenant.settings(), "ENTRA_MW_AUTH_FACTORY": build})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_apps.flask_weather")
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    with local_tenant() as tenant:
        run_example("The Flask weather API", tenant, WerkzeugServer(app_for(tenant), args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
