"""``python -m example_apps.webapp_calls_api [--web-port 5000] [--api-port 5001]``: FakeEntra, the API and the web
app together; prints where to go and who to sign in as; Ctrl-C stops everything."""

from __future__ import annotations

import argparse
import sys
import threading

from .local import run_locally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_apps.webapp_calls_api", description=__doc__)
    parser.add_argument("--web-port", type=int, default=5000)
    parser.add_argument("--api-port", type=int, default=5001)
    args = parser.parse_args(argv)
    try:
        with run_locally(web_port=args.web_port, api_port=args.api_port) as running:
            print(f"Web app    {running.web_url}   <- open this in a browser")
            print(f"API        {running.api_url}/api/claims (scope {running.api_scope})")
            print(f"FakeEntra  {running.entra.base_url}")
            print(f"           managed-identity endpoint {running.entra.managed_identity_endpoint}")
            print(f"Sign in as {running.username} / {running.password}")
            print(
                f"The web app ({running.web_client_id}) has no secret: it authenticates with the managed identity "
                f"{running.managed_identity_client_id} as a federated credential."
            )
            print("Ctrl-C stops everything.", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"webapp_calls_api: cannot start: {exc.strerror or exc} (try --web-port / --api-port)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
