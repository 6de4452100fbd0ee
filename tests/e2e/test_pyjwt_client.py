"""PyJWT's own ``PyJWKClient`` and ``jwt.decode`` against FakeEntra served over HTTPS, the way the reference
document's protected Flask API validates tokens (reference/webapp-calls-api-managed-identity.md, "API
Authentication"): take the bearer token, fetch the tenant's signing keys (JWKS), verify the RS256 signature, the
audience (the API's client id), the tenant's issuer and the expiry, keep the claims in ``g.user_claims``.

The API here is written for this test from those steps; it reads only what a real deployment would configure
(instance, tenant id, API client id) and discovers the keys from the tenant's v2 metadata.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import flask
import httpx2
import jwt
import pytest

from ._clients import Served, served_fake, token_of

pytestmark = pytest.mark.loopback


@pytest.fixture
def w() -> Iterator[Served]:
    yield from served_fake()


def protected_api(*, instance: str, tenant_id: str, api_client_id: str, ssl_context: ssl.SSLContext) -> Any:
    """The reference's "Protected API": Flask, PyJWT, one decorator."""
    app = flask.Flask("protected-api")
    metadata = httpx2.get(
        f"{instance}{tenant_id}/v2.0/.well-known/openid-configuration", verify=ssl_context, timeout=10
    ).json()
    jwks = jwt.PyJWKClient(metadata["jwks_uri"], ssl_context=ssl_context, timeout=10)
    # Entra's v2 issuer for the tenant, as such APIs write it (FakeEntra states the real host, not its own URL).
    issuer = f"https://login.microsoftonline.com/{tenant_id}/v2.0"

    def require_auth(view: Callable[[], Any]) -> Callable[[], Any]:
        @functools.wraps(view)
        def wrapper() -> Any:
            scheme, _, token = flask.request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return flask.jsonify(error="missing bearer token"), 401
            try:
                key = jwks.get_signing_key_from_jwt(token)
                flask.g.user_claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=["RS256"],
                    audience=api_client_id,
                    issuer=issuer,
                    options={"require": ["exp", "iat", "nbf", "aud", "iss"]},
                )
            except jwt.PyJWTError as exc:
                return flask.jsonify(error="token validation failed", reason=type(exc).__name__), 401
            return view()

        return wrapper

    @app.get("/api/claims")
    @require_auth
    def claims() -> Any:
        return flask.jsonify(flask.g.user_claims)

    return app


def _client(w: Served) -> Any:
    api = protected_api(
        instance=w.served.base_url,
        tenant_id=w.tid,
        api_client_id=w.scn.api.app_id,
        ssl_context=w.served.ssl_context(),
    )
    return api.test_client()


def _get(client: Any, token: str) -> Any:
    return client.get("/api/claims", headers={"Authorization": f"Bearer {token}"})


def test_metadata_issuer_is_the_tenants_v2_issuer(w: Served) -> None:
    # The API above hard-codes Entra's issuer form; FakeEntra's metadata must state exactly that.
    with httpx2.Client(verify=w.served.ssl_context()) as http:
        doc = http.get(f"{w.served.authority(w.tid)}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"https://login.microsoftonline.com/{w.tid}/v2.0"
    assert doc["jwks_uri"] == f"{w.served.authority(w.tid)}/discovery/v2.0/keys"


def test_accepts_user_and_app_tokens(w: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", w.served.ca_file)
    user = w.user_token()
    app_only = token_of(w.cca(w.scn.client.app_id, w.scn.client_secret).acquire_token_for_client([w.api_scope()]))
    client = _client(w)
    as_user, as_app = _get(client, user), _get(client, app_only)
    assert as_user.status_code == 200, as_user.get_json()
    claims = as_user.get_json()
    assert claims["oid"] == w.scn.user.object_id
    assert claims["scp"] == "Weather.Read"
    assert claims["preferred_username"] == w.scn.user.upn
    assert as_app.status_code == 200, as_app.get_json()
    assert as_app.get_json()["roles"] == ["Weather.Read.All"]
    assert as_app.get_json()["idtyp"] == "app"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(
            lambda w: w.fake.user_token(w.scn.user, client=w.scn.client, resource=w.scn.blueprint),
            "InvalidAudienceError",
            id="wrong-audience",
        ),
        pytest.param(Served.expired_token, "ExpiredSignatureError", id="expired"),
        pytest.param(Served.other_tenant_token, "InvalidIssuerError", id="other-tenant"),
        pytest.param(
            lambda w: w.user_token(version=1),
            "InvalidIssuerError",  # sts.windows.net, and api://… as audience
            id="v1-token",
        ),
    ],
)
def test_refuses(w: Served, make: Callable[[Served], str], reason: str) -> None:
    client = _client(w)
    assert _get(client, w.user_token()).status_code == 200
    refused = _get(client, make(w))
    assert refused.status_code == 401
    assert refused.get_json()["reason"] == reason


def test_rotated_key_is_fetched_on_its_first_token(w: Served) -> None:
    # PyJWKClient refetches the JWKS for an unknown kid (after its cooldown, here none): the served set then
    # holds the new key.
    jwks = jwt.PyJWKClient(
        f"{w.served.authority(w.tid)}/discovery/v2.0/keys", ssl_context=w.served.ssl_context(), cooldown_duration=0
    )
    first = w.user_token()
    assert jwks.get_signing_key_from_jwt(first).key_id == w.fake.current_kid
    new_kid = w.fake.rotate_keys(keep_old=False)
    rotated = w.user_token()
    key = jwks.get_signing_key_from_jwt(rotated)
    assert key.key_id == new_kid
    assert jwt.decode(rotated, key.key, algorithms=["RS256"], audience=w.scn.api.app_id)["oid"] == w.scn.user.object_id
    assert w.fake.request_count("jwks") == 2


def test_every_published_key_loads_in_pyjwt(w: Served) -> None:
    # PyJWK must take each served key as it is (x5c, x5t, issuer, no alg) and verify a token with it.
    w.fake.rotate_keys(keep_old=True)
    jwks = jwt.PyJWKClient(
        f"{w.served.authority(w.tid)}/discovery/v2.0/keys", ssl_context=w.served.ssl_context(), cache_jwk_set=False
    )
    keys = jwks.get_signing_keys()
    assert len(keys) == 2
    for key in keys:
        token = w.user_token(kid=key.key_id)
        assert jwt.decode(token, key.key, algorithms=["RS256"], audience=w.scn.api.app_id)["oid"]
