"""What both weather examples must do over a real socket, shared by their e2e tests: the checks take the running
example's port and its local tenant."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
from example_apps._local import LocalTenant

ROOT = Path(__file__).resolve().parents[2]


def raw_request(port: int, path: str, *headers: bytes) -> tuple[int, bytes]:
    """Send a request as raw bytes (so it can carry two Authorization headers) and read the whole answer."""
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close", *headers]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    return int(data.split(b"\r\n", 1)[0].split()[1]), data


def get(port: int, path: str, token: str | None = None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        return client.get(path, headers=headers)


def check_refusals_and_grants(tenant: LocalTenant, port: int) -> None:
    user = tenant.user_token()
    app_only = tenant.app_token()
    missing = get(port, "/forecast")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == "application/json"

    ok = get(port, "/forecast", user)
    assert ok.status_code == 200
    assert ok.json()["for"] == tenant.scenario.user.upn

    scn = tenant.scenario
    wrong_audience = tenant.fake.user_token(scn.user, client=scn.client, resource=tenant.provider_app)
    refused = get(port, "/forecast", wrong_audience)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]

    now = int(time.time())
    expired = tenant.user_token(extra_claims={"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})
    refused = get(port, "/forecast", expired)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]

    insufficient = get(port, "/forecast", app_only)
    assert insufficient.status_code == 403
    assert 'error="insufficient_scope"' in insufficient.headers["www-authenticate"]
    assert 'scope="Weather.Read"' in insufficient.headers["www-authenticate"]

    assert get(port, "/stations", app_only).json() == {"stations": ["Seattle", "Redmond"]}
    role_missing = get(port, "/stations", user)
    assert role_missing.status_code == 403
    assert 'scope="Weather.Read.All"' in role_missing.headers["www-authenticate"]

    header = b"Authorization: Bearer " + user.encode()
    status, data = raw_request(port, "/forecast", header, header)
    assert status == 400
    assert b'error="invalid_request"' in data
    status, _ = raw_request(port, "/forecast", b"Authorization: Basic dXNlcjpwYXNz", header)
    assert status == 400


def check_keys_unavailable(tenant: LocalTenant, port: int) -> None:
    """The app has not fetched keys yet, and the tenant's metadata cannot be reached: 503, never 500."""
    tenant.fake.faults.outage("discovery")
    response = get(port, "/forecast", tenant.user_token())
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["error"] == "temporarily_unavailable"
    assert "www-authenticate" not in response.headers


def check_on_behalf_of(tenant: LocalTenant, port: int, paths: tuple[str, ...]) -> None:
    """Two calls for one caller reach the provider with one new token (never the caller's): one token request."""
    caller = tenant.user_token()
    tenant.fake.reset_counts()
    for path in paths:
        response = get(port, path, caller)
        assert response.status_code == 200, response.text
        assert response.json()["for_user"] == tenant.scenario.user.upn
    assert tenant.fake.request_count("token") == 1
    tokens = {token for _, token in tenant.provider.calls}
    assert len(tenant.provider.calls) == len(paths)
    assert len(tokens) == 1 and caller not in tokens
    claims = tenant.fake.decode(tokens.pop())
    assert claims["aud"] == tenant.provider_app.app_id
    assert claims["azp"] == tenant.scenario.api.app_id
    assert claims["oid"] == tenant.scenario.user.object_id


def check_no_token_logged(tenant: LocalTenant, records: list[logging.LogRecord]) -> None:
    tokens = [tenant.user_token(), tenant.app_token(), *(token for _, token in tenant.provider.calls)]
    text = "\n".join(record.getMessage() for record in records)
    for token in tokens:
        _head, payload, signature = token.split(".")
        for piece in (payload[:32], signature[:32]):
            assert piece not in text


def run_the_readme_command(module: str) -> None:
    """``python -m <module> --port 0`` prints curl commands that work, and stops cleanly on Ctrl+C."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        output = "".join(lines)
        assert "Press Ctrl+C" in output, output
        curl = next(line for line in lines if "forecast/provider" in line).split()
        url = curl[2]
        token = curl[-1].rstrip("'")
        with httpx2.Client(timeout=10) as client:
            response = client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.json()["provider"] == "contoso-forecast"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


__all__ = [
    "check_keys_unavailable",
    "check_no_token_logged",
    "check_on_behalf_of",
    "check_refusals_and_grants",
    "raw_request",
    "run_the_readme_command",
]
