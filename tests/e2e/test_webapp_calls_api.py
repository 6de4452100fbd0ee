"""example_apps/webapp_calls_api: the README's one command, and the passwordless chain (managed identity →
federated credential → the user's delegated token → the API) over real sockets, without a browser."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.parse
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path

import httpx2
import pytest
from example_apps.webapp_calls_api.local import run_locally

from entra_mw._signin import SESSION_COOKIE
from entra_mw.testing._interactive import drive_sign_in

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.loopback]


def test_the_chain_works_with_no_secret_anywhere() -> None:
    with run_locally(web_port=0, api_port=0) as running:
        web_app = running.fake.registry.app(running.web_client_id)
        assert web_app is not None and not web_app.secrets and not web_app.certificates
        with (
            httpx2.Client(base_url=running.web_url, timeout=20) as web,
            httpx2.Client(verify=running.entra.ssl_context(), timeout=20) as entra,
        ):
            # Browsers send Secure cookies to http://localhost (a secure context); http.cookiejar only over https.
            web.cookies.jar.set_policy(DefaultCookiePolicy(secure_protocols=("https", "wss", "http")))
            assert "not signed in" in web.get("/").text
            login = web.get("/call-api?x=1")
            assert login.status_code == 302 and login.headers["location"] == "/auth/login?next=/call-api?x%3D1"
            start = web.get(login.headers["location"])
            assert start.status_code == 302 and start.headers["location"].startswith(running.entra.base_url)
            params = drive_sign_in(
                entra, start.headers["location"], username=running.username, password=running.password, consent=True
            )
            back = web.post("/auth/callback", data=params)
            assert back.status_code == 303 and back.headers["location"] == "/call-api?x=1"
            assert web.cookies.get(SESSION_COOKIE)
            page = web.get("/call-api?x=1")
            assert page.status_code == 200 and 'id="api-status">200<' in page.text
            assert "access_as_user" in page.text and running.web_client_id in page.text
            assert running.fake.request_count("managed_identity") >= 1
            api = httpx2.get(running.api_url + "/api/claims", timeout=10)
            assert api.status_code == 401 and api.headers["www-authenticate"].startswith("Bearer")
            out = web.post("/auth/logout", headers={"Origin": running.web_url.rstrip("/")})
            assert out.status_code == 303
            assert urllib.parse.urlsplit(out.headers["location"]).path.endswith("/oauth2/v2.0/logout")
            assert web.get("/call-api").status_code == 302


def test_one_command_runs_everything_and_stops_on_ctrl_c() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "example_apps.webapp_calls_api", "--web-port", "0", "--api-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(7)]
        text = "".join(lines)
        web_url = re.search(r"Web app\s+(http://localhost:\d+/)", text)
        assert web_url is not None, text
        assert "Sign in as alice@contoso.onmicrosoft.com / " in text
        assert "has no secret" in text and "managed-identity endpoint https://127.0.0.1:" in text
        home = httpx2.get(web_url.group(1), timeout=10)
        assert home.status_code == 200 and "Sign in" in home.text
        login = httpx2.get(web_url.group(1) + "auth/login", timeout=10)
        assert login.status_code == 302 and "/oauth2/v2.0/authorize?" in login.headers["location"]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_busy_port_is_one_line_and_exit_2() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "example_apps.webapp_calls_api", "--web-port", str(port), "--api-port", "0"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "cannot start" in done.stderr
