"""The sidecar's endpoints over a real socket: /healthz, /Validate, routing, the response contract (camelCase JSON,
no-cache headers on 2xx, ProblemDetails), OpenAPI only in Development."""

from __future__ import annotations

import json

import httpx2
import pytest

from entra_mw.testing import FakeEntra, Scenario

from ._support import user_token
from .conftest import StartSidecar

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(90)]

NO_CACHE = {"cache-control": "no-cache, no-store, must-revalidate", "expires": "0", "pragma": "no-cache"}


def assert_no_cache(response: httpx2.Response) -> None:
    for name, value in NO_CACHE.items():
        assert response.headers.get(name) == value, (name, response.headers)


def test_healthz_is_healthy_text(client: httpx2.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.text == "Healthy"
    assert response.headers["content-type"].startswith("text/plain")
    assert_no_cache(response)
    assert client.get("/HEALTHZ").status_code == 200


def test_validate_returns_protocol_token_and_raw_claims(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    token = user_token(fake, scn)
    response = client.get("/Validate", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_no_cache(response)
    body = response.json()
    assert list(body) == ["protocol", "token", "claims"]
    assert body["protocol"] == "Bearer"
    assert body["token"] == token
    assert body["claims"] == fake.decode(token)
    assert body["claims"]["aud"] == scn.blueprint.app_id
    assert isinstance(body["claims"]["exp"], int)


def test_validate_accepts_a_token_with_neither_scp_nor_roles(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario
) -> None:
    # The official sidecar forces AllowWebApiToBeAuthorizedByACL (spec §1.1 step 2).
    token = fake.app_token(scn.client, resource=scn.blueprint, roles=[])
    assert "roles" not in fake.decode(token) or not fake.decode(token)["roles"]
    assert client.get("/Validate", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_validate_without_token_is_a_bare_challenge(client: httpx2.Client) -> None:
    response = client.get("/Validate")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.content == b""
    assert "cache-control" not in response.headers


def test_validate_bad_token_is_invalid_token(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    foreign = fake.user_token(scn.user, client=scn.client, resource=scn.api)  # another API's audience
    for token in ("not-a-jwt", foreign, user_token(fake, scn)[:-4] + "AAAA"):
        response = client.get("/Validate", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert response.content == b""


def test_token_in_query_is_refused(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    response = client.get("/Validate", params={"access_token": user_token(fake, scn)})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_validate_scope_check_is_plain_text_403(start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario) -> None:
    sidecar = start_sidecar(AzureAd__Scopes="access_agent")
    token = user_token(fake, scn)
    assert sidecar.get("/Validate", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    other = start_sidecar(AzureAd__Scopes="access_agent Other.Scope")
    response = other.get("/Validate", headers={"Authorization": f"Bearer {token}"})
    # The whole string is one accepted scope, so a space-separated list never matches (spec §1.7).
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == (
        "IDW10203: The 'scope' or 'scp' claim does not contain scopes 'access_agent Other.Scope' or was not found. "
    )


def test_routes_are_case_insensitive_and_methods_are_checked(
    client: httpx2.Client, fake: FakeEntra, scn: Scenario
) -> None:
    auth = {"Authorization": f"Bearer {user_token(fake, scn)}"}
    assert client.get("/validate", headers=auth).status_code == 200
    assert client.get("/VALIDATE/", headers=auth).status_code == 200
    assert client.post("/Validate", headers=auth).status_code == 405
    refused = client.request("HEAD", "/DownstreamApi/graph", headers=auth)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST, GET, PUT, PATCH, DELETE"
    assert client.post("/AuthorizationHeader/graph", headers=auth).status_code == 405
    assert client.get("/nope").status_code == 404
    assert client.get("/AuthorizationHeader").status_code == 404
    assert client.get("/AuthorizationHeader/graph/extra").status_code == 404


def test_authorization_header_is_camel_case_with_no_cache(client: httpx2.Client) -> None:
    response = client.get("/AuthorizationHeaderUnauthenticated/graph")
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["authorizationHeader"]
    assert response.json()["authorizationHeader"].startswith("Bearer ey")
    assert_no_cache(response)


def test_problem_details_shape(client: httpx2.Client) -> None:
    response = client.get("/AuthorizationHeaderUnauthenticated/unknown-api")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "cache-control" not in response.headers
    assert response.json() == {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": "Bad Request",
        "status": 400,
        "detail": "No scopes found for the API 'unknown-api' or in optionsOverride. 'scopes' needs to be either "
        "a single value or a list of values.",
    }


def test_openapi_only_in_development(client: httpx2.Client, start_sidecar: StartSidecar) -> None:
    assert client.get("/openapi/v1.json").status_code == 404
    dev = start_sidecar(ASPNETCORE_ENVIRONMENT="Development")
    response = dev.get("/openapi/v1.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"] == "3.1.1"
    operations = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert operations == {
        "ValidateAuthorizationHeader",
        "AuthorizationHeader",
        "AuthorizationHeaderUnauthenticated",
        "DownstreamApi",
        "DownstreamApiUnauthenticated",
    }
    names = {p["name"] for p in doc["paths"]["/AuthorizationHeader/{apiName}"]["get"]["parameters"]}
    assert {"apiName", "AgentIdentity", "AgentUsername", "AgentUserId", "optionsOverride.Scopes"} <= names
    assert "post" in doc["paths"]["/DownstreamApi/{apiName}"]
    json.dumps(doc)  # plain JSON all the way down


def test_two_authorization_headers_are_a_400(client: httpx2.Client, fake: FakeEntra, scn: Scenario) -> None:
    token = user_token(fake, scn)
    response = client.get(
        "/Validate", headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert token not in response.text


def test_no_signing_keys_is_a_503(start_sidecar: StartSidecar, fake: FakeEntra, scn: Scenario) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    sidecar = start_sidecar(AzureAd__Instance=f"https://127.0.0.1:{dead}/")
    response = sidecar.get("/Validate", headers={"Authorization": f"Bearer {user_token(fake, scn)}"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "retry-after" in response.headers
