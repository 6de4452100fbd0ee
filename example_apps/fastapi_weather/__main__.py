"""``python -m example_apps.fastapi_weather [--port 8000]``: the weather API under uvicorn against a local
FakeEntra, printing curl commands that work."""

from __future__ import annotations

import argparse
import sys
import threading

import uvicorn
from fastapi import FastAPI

from .._local import local_tenant, run_example
from .app import create_app


class UvicornServer:
    """uvicorn on 127.0.0.1 in a background thread, with the app's lifespan (which closes the engine)."""

    def __init__(self, app: FastAPI, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_apps.fastapi_weather")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    with local_tenant() as tenant:
        run_example("The FastAPI weather API", tenant, UvicornServer(create_app(tenant.auth()), args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
