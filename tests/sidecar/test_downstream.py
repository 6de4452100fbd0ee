"""``POST /DownstreamApi*`` (spec §1.6): the envelope, the outbound request a recording API sees, the body passed
through (chunked too), redirects, the overrides that shape the call, and failures."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx2
import pytest

from entra_mw.testing import FakeEntra, Scenario

from ._support import Recorder, user_token
from .conftest import StartSidecar

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]

UNAUTH_CALLS = "Sidecar__AllowOverrides__CallDownstreamApiUnauthenticated"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_envelope_and_the_outbound_request(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario, recorder: Recorder
) -> None:
    tc = user_token(fake, scn)
    response = client.post("/DownstreamApi/weather", headers=bearer(tc))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    body = response.json()
    assert list(body) == ["statusCode", "headers", "content"]
    assert body["statusCode"] == 200
    # Content headers only, in .NET's casing, each a list of values.
    assert body["headers"]["Content-Type"] == ["application/json"]
    assert body["headers"]["Content-Language"] == ["en"]
    assert body["headers"]["Content-Length"] == [str(len(body["content"].encode()))]
    assert "X-Not-A-Content-Header" not in body["headers"]
    assert all(name.lower() not in ("date", "server", "x-not-a-content-header") for name in body["headers"])
    seen = recorder.last()
    # A POST to the sidecar goes out as the configured method (default GET), with no body and no caller token.
    assert seen.method == "GET"
    assert seen.path == "/echo"
    assert seen.headers["accept"] == "application/json"
    assert seen.token_claims["oid"] == scn.user.object_id
    assert seen.token_claims["aud"] == scn.api.app_id
    assert tc not in seen.headers["authorization"]
    assert "content-type" not in seen.headers


def test_unauthenticated_call_with_the_blueprint_and_agent(
    client: httpx2.Client, start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario, recorder: Recorder
) -> None:
    # The Kubernetes article's command, with the default gate: the blueprint's app token.
    response = client.post(
        f"/DownstreamApiUnauthenticated/graph?AgentIdentity={scn.agent.app_id}",
        headers={"Content-Type": "application/json"},
    )
    assert response.json()["statusCode"] == 200
    assert recorder.last().token_claims["azp"] == scn.blueprint.app_id
    sidecar = start_sidecar(**{UNAUTH_CALLS: "true"})
    response = sidecar.post(
        f"/DownstreamApiUnauthenticated/graph?AgentIdentity={scn.agent.app_id}",
        headers={"Content-Type": "application/json"},
    )
    assert response.json()["statusCode"] == 200
    assert recorder.last().token_claims["azp"] == scn.agent.app_id
    assert recorder.last().token_claims["idtyp"] == "app"


def test_body_is_forwarded_with_the_callers_media_type(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario, recorder: Recorder
) -> None:
    tc = user_token(fake, scn)
    response = client.post(
        "/DownstreamApi/weather?optionsOverride.HttpMethod=POST&optionsOverride.RelativePath=forecast/today",
        headers={**bearer(tc), "Content-Type": "text/csv; charset=utf-8"},
        content=b"city,days\nDallas,3\n",
    )
    assert response.json()["statusCode"] == 200
    seen = recorder.last()
    assert seen.method == "POST"
    assert seen.path == "/echo/forecast/today"
    assert seen.body == b"city,days\nDallas,3\n"
    assert seen.headers["content-type"] == "text/csv; charset=utf-8"


def test_chunked_request_body_is_passed_through(
    sidecar: str, fake: FakeEntra, scn: Scenario, recorder: Recorder
) -> None:
    tc = user_token(fake, scn)
    port = urlsplit(sidecar).port
    assert port is not None
    payload = b'{"city":"Dallas"}'
    request = (
        b"POST /DownstreamApi/weather?optionsOverride.HttpMethod=PUT HTTP/1.1\r\n"
        b"Host: localhost:5000\r\nConnection: close\r\n"
        b"Authorization: Bearer " + tc.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(payload[:6]):x}".encode()
        + b"\r\n"
        + payload[:6]
        + b"\r\n"
        + f"{len(payload[6:]):x}".encode()
        + b"\r\n"
        + payload[6:]
        + b"\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    seen = recorder.last()
    assert seen.method == "PUT"
    assert seen.body == payload


def test_no_content_type_means_no_body(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario, recorder: Recorder
) -> None:
    tc = user_token(fake, scn)
    client.post("/DownstreamApi/weather?optionsOverride.HttpMethod=POST", headers=bearer(tc), content=b"ignored")
    assert recorder.last().body == b""
    assert "content-type" not in recorder.last().headers


def test_relative_path_override_cannot_leave_the_base_path(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario, recorder: Recorder
) -> None:
    tc = user_token(fake, scn)
    before = len(recorder.requests)
    for path in ("../nocontent", "//evil.example/x", "https://evil.example/"):
        response = client.post(f"/DownstreamApi/weather?optionsOverride.RelativePath={path}", headers=bearer(tc))
        assert response.status_code == 400, path
        assert response.headers["content-type"] == "application/problem+json"
    assert len(recorder.requests) == before


def test_extra_headers_and_query_overrides(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario, recorder: Recorder
) -> None:
    tc = user_token(fake, scn)
    url = (
        "/DownstreamApi/weather?optionsOverride.ExtraQueryParameters.days=3&optionsOverride.ExtraQueryParameters.q=a b"
        "&optionsOverride.ExtraHeaderParameters.X-Trace=abc&optionsOverride.ExtraHeaderParameters.Authorization=evil"
        "&optionsOverride.ExtraHeaderParameters.Host=evil.example&optionsOverride.AcceptHeader=text/plain"
        "&optionsOverride.ExtraHeaderParameters.X-Forwarded-For=1.2.3.4"
    )
    response = client.post(url, headers=bearer(tc))
    assert response.json()["statusCode"] == 200, response.text
    seen = recorder.last()
    assert seen.query == "days=3&q=a%20b"
    assert seen.headers["x-trace"] == "abc"
    assert seen.headers["accept"] == "text/plain"
    # Reserved headers never reach the downstream API (OptionsOverrideHeaderHandlingTests).
    assert seen.headers["authorization"].startswith("Bearer ey")
    assert "evil" not in seen.headers["authorization"]
    assert seen.headers["host"].startswith("127.0.0.1")


def test_downstream_status_is_in_the_envelope(
    start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario, api_url: str
) -> None:
    sidecar = start_sidecar(
        DownstreamApis__busy__BaseUrl=f"{api_url}/unavailable",
        **{
            "DownstreamApis__busy__Scopes__0": f"api://{scn.api.app_id}/.default",
            "DownstreamApis__busy__RequestAppToken": "true",
            "DownstreamApis__empty__BaseUrl": f"{api_url}/nocontent",
            "DownstreamApis__empty__Scopes__0": f"api://{scn.api.app_id}/.default",
            "DownstreamApis__empty__RequestAppToken": "true",
            "DownstreamApis__chunky__BaseUrl": f"{api_url}/chunked",
            "DownstreamApis__chunky__Scopes__0": f"api://{scn.api.app_id}/.default",
            "DownstreamApis__chunky__RequestAppToken": "true",
            "DownstreamApis__moved__BaseUrl": f"{api_url}/redirect",
            "DownstreamApis__moved__Scopes__0": f"api://{scn.api.app_id}/.default",
            "DownstreamApis__moved__RequestAppToken": "true",
        },
    )
    tc = user_token(fake, scn)
    busy = sidecar.post("/DownstreamApi/busy", headers=bearer(tc))
    assert busy.status_code == 200
    assert busy.json()["statusCode"] == 503
    assert busy.json()["content"] == "busy"
    # Retry-After and WWW-Authenticate are response headers, not content headers: not in the envelope.
    assert set(busy.json()["headers"]) == {"Content-Type", "Content-Length"}
    empty = sidecar.post("/DownstreamApi/empty", headers=bearer(tc)).json()
    assert empty["statusCode"] == 204
    assert empty["content"] is None
    chunky = sidecar.post("/DownstreamApi/chunky", headers=bearer(tc)).json()
    assert chunky["content"] == '{"chunked":true}'
    assert chunky["headers"]["Content-Length"] == ["16"]
    moved = sidecar.post("/DownstreamApi/moved", headers=bearer(tc)).json()
    assert moved["statusCode"] == 302  # redirects are not followed by default
    assert "Location" not in moved["headers"]


def test_redirects_followed_when_allowed(
    start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario, api_url: str, recorder: Recorder
) -> None:
    sidecar = start_sidecar(
        Sidecar__AllowOutboundRedirects="true",
        DownstreamApis__moved__BaseUrl=f"{api_url}/redirect",
        **{
            "DownstreamApis__moved__Scopes__0": f"api://{scn.api.app_id}/.default",
            "DownstreamApis__moved__RequestAppToken": "true",
        },
    )
    response = sidecar.post("/DownstreamApi/moved", headers=bearer(user_token(fake, scn))).json()
    assert response["statusCode"] == 200
    assert '"path":"/echo/redirected"' in response["content"]
    # As .NET's HttpClient: the token is not sent on to the redirect's target.
    assert "authorization" not in recorder.last().headers


def test_unknown_and_unreachable_apis(start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    sidecar = start_sidecar(
        DownstreamApis__dead__BaseUrl=f"http://127.0.0.1:{dead_port}/",
        **{
            "DownstreamApis__dead__Scopes__0": f"api://{scn.api.app_id}/.default",
            "DownstreamApis__dead__RequestAppToken": "true",
        },
    )
    tc = user_token(fake, scn)
    unknown = sidecar.post("/DownstreamApi/nope", headers=bearer(tc))
    assert unknown.status_code == 400
    assert unknown.json()["detail"].startswith("No scopes found for the API 'nope'")
    scoped = sidecar.post(
        f"/DownstreamApi/nope?optionsOverride.Scopes=api://{scn.api.app_id}/.default", headers=bearer(tc)
    )
    assert scoped.status_code == 400
    assert "not configured" in scoped.json()["detail"]
    dead = sidecar.post("/DownstreamApi/dead", headers=bearer(tc))
    assert dead.status_code == 502
    assert dead.headers["content-type"] == "application/problem+json"
    assert "dead" in dead.json()["detail"]


def test_downstream_requires_a_caller(client: httpx2.Client) -> None:
    response = client.post("/DownstreamApi/weather")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_call_overrides_gated_off(
    start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario, recorder: Recorder
) -> None:
    sidecar = start_sidecar(Sidecar__AllowOverrides__CallDownstreamApi="false")
    tc = user_token(fake, scn)
    url = (
        "/DownstreamApi/weather?optionsOverride.RelativePath=elsewhere&optionsOverride.HttpMethod=DELETE"
        f"&optionsOverride.ExtraHeaderParameters.X-Trace=abc&AgentIdentity={scn.agent.app_id}"
    )
    assert sidecar.post(url, headers=bearer(tc)).json()["statusCode"] == 200
    seen = recorder.last()
    assert (seen.method, seen.path) == ("GET", "/echo")
    assert "x-trace" not in seen.headers
    assert seen.token_claims["azp"] == scn.blueprint.app_id  # no agent either: plain OBO
