"""``python -m example_apps.fastapi_weather [--port 8000]``: the weather API under uvicorn against a local
FakeEntra, printing curl commands that work."""

from __future__ import annotations

import argparse
import sys

from .._local import UvicornServer, local_tenant, run_example
from .app import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_apps.fastapi_weather")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    with local_tenant() as tenant:
        run_example("The FastAPI weather API", tenant, UvicornServer(create_app(tenant.auth()), args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
