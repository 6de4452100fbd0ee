"""``python -m example_apps.django_weather``: FakeEntra, the forecast API and the weather API (Django under
uvicorn) on loopback, with curl commands that work. ``--check`` makes those calls itself and exits."""

from __future__ import annotations

import argparse
import os
import sys
import threading

import uvicorn

from .sandbox import ForecastAPI, Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_apps.django_weather", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="the weather API's port on 127.0.0.1 (0: any)")
    parser.add_argument("--check", action="store_true", help="call every endpoint once, then stop")
    args = parser.parse_args(argv)

    with Sandbox.start() as sandbox, ForecastAPI() as forecast:
        os.environ.update(sandbox.environment(forecast.base_url))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_apps.django_weather.settings")
        from .asgi import application

        config = uvicorn.Config(application, host="127.0.0.1", port=args.port, lifespan="off", log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            thread.join(0.02)
        if not server.started:
            print("the weather API did not start", file=sys.stderr)
            return 1
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        user, app = sandbox.user_token(), sandbox.app_token()
        print(f"FakeEntra at {sandbox.served.base_url}; the weather API at {base}/ (Ctrl+C stops both)")
        print("These FakeEntra tokens are worthless anywhere else. Try:")
        print(f'  curl -i {base}/forecast -H "Authorization: Bearer {user}"')
        print(f'  curl -i {base}/outlook -H "Authorization: Bearer {user}"       # On-Behalf-Of alice')
        print(f'  curl -i {base}/stations -H "Authorization: Bearer {app}"      # app role only')
        print(f'  curl -i {base}/observations -H "Authorization: Bearer {app}"  # DRF')
        print(f"  curl -i {base}/forecast                                        # 401, bare challenge")
        sys.stdout.flush()
        try:
            if args.check:
                return _check(base, user, app)
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.should_exit = True
            thread.join(10)
    return 0


def _check(base: str, user: str, app: str) -> int:
    import httpx2

    expected = [
        ("/forecast", user, 200),
        ("/outlook", user, 200),
        ("/stations", app, 200),
        ("/observations", app, 200),
        ("/stations", user, 403),
        ("/forecast", None, 401),
    ]
    failed = 0
    with httpx2.Client(timeout=30) as client:
        for path, token, status in expected:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            got = client.get(base + path, headers=headers).status_code
            print(f"GET {path}: {got}" + ("" if got == status else f" (expected {status})"))
            failed += got != status
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
