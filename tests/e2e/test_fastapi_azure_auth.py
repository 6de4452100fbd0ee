"""fastapi-azure-auth, a FastAPI security scheme nobody here wrote, protecting an API against FakeEntra served over
HTTPS: it loads the v2 OpenID configuration and JWKS from the served instance (spec §5.4), accepts FakeEntra's v2
tokens for the API, refuses the ones Entra's own issuer and audience rules refuse, and its Swagger "Authorize"
flow (authorization code + PKCE at the URLs it advertises) signs a person in at FakeEntra.

The library hard-codes ``https://login.microsoftonline.com`` for its metadata; its ``openid_config_url`` (on the
base scheme; the single-tenant class only exposes it as ``openid_config.config_url``), ``openapi_authorization_url``
and ``openapi_token_url`` options point it at the served FakeEntra, and ``http_client_config={"verify": ...}`` or
``SSL_CERT_FILE`` make it trust the served CA.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from ._clients import Served, served_fake, token_of

faa = pytest.importorskip("fastapi_azure_auth")

from fastapi import FastAPI, Security  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from fastapi_azure_auth import (  # noqa: E402
    MultiTenantAzureAuthorizationCodeBearer,
    SingleTenantAzureAuthorizationCodeBearer,
)
from fastapi_azure_auth.auth import AzureAuthorizationCodeBearerBase  # noqa: E402
from fastapi_azure_auth.exceptions import UnauthorizedHttp  # noqa: E402
from fastapi_azure_auth.user import User  # noqa: E402

pytestmark = pytest.mark.loopback

SWAGGER_REDIRECT = "http://localhost:8000/oauth2-redirect"


@pytest.fixture
def w() -> Iterator[Served]:
    yield from served_fake()


def _metadata_url(w: Served, tenant: str) -> str:
    return f"{w.served.base_url}{tenant}/v2.0/.well-known/openid-configuration"


def _single_tenant(w: Served, **kw: Any) -> SingleTenantAzureAuthorizationCodeBearer:
    """The scheme as its docs write it, with FakeEntra's URLs where it would use login.microsoftonline.com."""
    kw.setdefault("http_client_config", {"verify": w.served.ssl_context()})
    scheme = SingleTenantAzureAuthorizationCodeBearer(
        app_client_id=w.scn.api.app_id,
        tenant_id=w.tid,
        scopes={w.api_scope("Weather.Read"): "Read the weather"},
        openapi_authorization_url=w.served.authorize_endpoint(w.tid),
        openapi_token_url=f"{w.served.authority(w.tid)}/oauth2/v2.0/token",
        **kw,
    )
    # The single-tenant class has no openid_config_url parameter: its OpenIdConfig takes the URL.
    scheme.openid_config.config_url = _metadata_url(w, w.tid)
    return scheme


def _api(scheme: AzureAuthorizationCodeBearerBase) -> FastAPI:
    app = FastAPI(swagger_ui_oauth2_redirect_url="/oauth2-redirect")

    def facts(user: User) -> dict[str, Any]:
        return {
            "oid": user.oid,
            "tid": user.tid,
            "azp": user.azp,
            "ver": user.ver,
            "idtyp": user.idtyp,
            "scp": user.scp,
            "roles": user.roles,
            "preferred_username": user.preferred_username,
            "is_guest": user.is_guest,
        }

    # Default-value dependencies: the scheme is a local, which string annotations could not name.
    @app.get("/weather")
    async def weather(user: User = Security(scheme, scopes=["Weather.Read"])) -> dict[str, Any]:
        return facts(user)

    @app.get("/whoami")
    async def whoami(user: User = Security(scheme)) -> dict[str, Any]:
        return facts(user)

    return app


def _get(client: TestClient, path: str, token: str) -> httpx2.Response:
    response: httpx2.Response = client.get(path, headers={"Authorization": f"Bearer {token}"})
    return response


def test_single_tenant_accepts_user_and_app_tokens(w: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", w.served.ca_file)  # MSAL's requests session
    minted = w.user_token()
    # Tokens from the served token endpoint through MSAL: OBO for alice, client credentials for the client.
    obo = token_of(
        w.cca(w.scn.blueprint.app_id, w.scn.blueprint_secret).acquire_token_on_behalf_of(
            w.tc(), [w.api_scope("Weather.Read")]
        )
    )
    app_only = token_of(w.cca(w.scn.client.app_id, w.scn.client_secret).acquire_token_for_client([w.api_scope()]))
    w.fake.reset_counts()  # MSAL's own discovery is not the scheme's
    with TestClient(_api(_single_tenant(w))) as client:
        user = _get(client, "/weather", minted)
        via_obo = _get(client, "/weather", obo)
        app = _get(client, "/whoami", app_only)
    assert user.status_code == 200, user.text
    assert user.json() == {
        "oid": w.scn.user.object_id,
        "tid": w.tid,
        "azp": w.scn.client.app_id,
        "ver": "2.0",
        "idtyp": "user",
        "scp": ["Weather.Read"],
        "roles": [],
        "preferred_username": w.scn.user.upn,
        "is_guest": False,
    }
    assert via_obo.status_code == 200, via_obo.text
    assert via_obo.json()["oid"] == w.scn.user.object_id
    assert via_obo.json()["azp"] == w.scn.blueprint.app_id
    assert app.status_code == 200, app.text
    assert app.json()["idtyp"] == "app"
    assert app.json()["roles"] == ["Weather.Read.All"]
    assert app.json()["azp"] == w.scn.client.app_id
    # One metadata and one keys fetch served every request (its 24 h cache).
    assert w.fake.request_count("openid_configuration") == 1
    assert w.fake.request_count("jwks") == 1


def _foreign_key(w: Served) -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    claims = w.fake.decode(w.user_token())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return w.fake.mint_raw({"typ": "JWT", "alg": "RS256", "kid": "not-a-published-kid"}, claims, key=key)


@pytest.mark.parametrize(
    ("make", "path", "status", "message"),
    [
        pytest.param(
            lambda w: w.fake.user_token(w.scn.user, client=w.scn.client, resource=w.scn.blueprint),
            "/whoami",
            401,
            "Token contains invalid claims",
            id="wrong-audience",
        ),
        pytest.param(Served.expired_token, "/whoami", 401, "Token signature has expired", id="expired"),
        pytest.param(Served.other_tenant_token, "/whoami", 401, "Token contains invalid claims", id="other-tenant"),
        pytest.param(
            _foreign_key, "/whoami", 401, "Unable to verify token, no signing keys found", id="unpublished-key"
        ),
        pytest.param(
            lambda w: w.user_token(version=1),
            "/whoami",
            401,
            "Token contains invalid claims",
            id="v1-token",  # the library validates v2 tokens only (aud = client id, v2 issuer)
        ),
        pytest.param(
            lambda w: w.fake.app_token(w.scn.client, resource=w.scn.api),
            "/weather",
            403,
            "Required scope missing",
            id="no-scope",
        ),
    ],
)
def test_single_tenant_refuses(w: Served, make: Any, path: str, status: int, message: str) -> None:
    token = make(w)
    with TestClient(_api(_single_tenant(w))) as client:
        good = _get(client, "/whoami", w.user_token())
        refused = _get(client, path, token)
    assert good.status_code == 200, good.text  # the same scheme accepts the genuine token
    assert refused.status_code == status, refused.text
    assert refused.json()["detail"]["message"] == message
    assert refused.headers["www-authenticate"].startswith("Bearer")


def test_trusts_the_served_ca_through_ssl_cert_file(w: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", w.served.ca_bundle)
    token = w.user_token()
    with TestClient(_api(_single_tenant(w, http_client_config=None))) as client:
        response = _get(client, "/weather", token)
    assert response.status_code == 200, response.text


def test_base_scheme_with_openid_config_url(w: Served) -> None:
    scheme = AzureAuthorizationCodeBearerBase(
        app_client_id=w.scn.api.app_id,
        tenant_id=w.tid,
        openid_config_url=_metadata_url(w, w.tid),
        openapi_authorization_url=w.served.authorize_endpoint(w.tid),
        openapi_token_url=f"{w.served.authority(w.tid)}/oauth2/v2.0/token",
        http_client_config={"verify": w.served.ssl_context()},
    )
    token = w.user_token()
    with TestClient(_api(scheme)) as client:
        response = _get(client, "/weather", token)
    assert response.status_code == 200, response.text
    assert scheme.openid_config.issuer == f"https://login.microsoftonline.com/{w.tid}/v2.0"
    assert scheme.openid_config.token_endpoint == f"{w.served.authority(w.tid)}/oauth2/v2.0/token"


def test_claims_mapping_app_keys_through_appid(w: Served) -> None:
    # An app with its own signing key (claims mapping): its tokens verify only against ?appid= metadata and keys.
    w.fake.add_app_specific_key(w.scn.api)
    token = w.user_token()
    with TestClient(_api(_single_tenant(w, openid_config_use_app_id=True))) as client:
        with_appid = _get(client, "/weather", token)
    with TestClient(_api(_single_tenant(w))) as client:
        tenant_keys = _get(client, "/weather", token)
    assert with_appid.status_code == 200, with_appid.text
    assert tenant_keys.status_code == 401
    assert tenant_keys.json()["detail"]["message"] == "Unable to verify token, no signing keys found"


def test_multi_tenant_with_issuer_validation(w: Served) -> None:
    fabrikam = w.fake.add_tenant(domain="fabrikam.onmicrosoft.com")
    bob = w.fake.add_user(fabrikam, upn="bob@fabrikam.onmicrosoft.com", password="B0b-p@ss")
    northwind = w.fake.add_tenant(domain="northwind.onmicrosoft.com")
    carol = w.fake.add_user(northwind, upn="carol@northwind.onmicrosoft.com", password="C@rol-pw")
    allowed = {w.tid, fabrikam.tenant_id}

    async def issuer_for(tid: str) -> str:
        if tid not in allowed:
            raise UnauthorizedHttp("Tenant not allowed")
        # The common document's issuer is Entra's template: the tenant's own issuer fills it in.
        return scheme.openid_config.issuer.replace("{tenantid}", tid)

    scheme = MultiTenantAzureAuthorizationCodeBearer(
        app_client_id=w.scn.api.app_id,
        iss_callable=issuer_for,
        openapi_authorization_url=w.served.authorize_endpoint("common"),
        openapi_token_url=f"{w.served.authority('common')}/oauth2/v2.0/token",
        http_client_config={"verify": w.served.ssl_context()},
    )
    scheme.openid_config.config_url = _metadata_url(w, "common")
    home = w.user_token()
    guest_tenant = w.fake.user_token(bob, client=w.scn.client, resource=w.scn.api)
    stranger = w.fake.user_token(carol, client=w.scn.client, resource=w.scn.api)
    # A token whose iss names another tenant than its tid: the tenant's issuer is not the token's.
    mismatched = w.fake.user_token(bob, client=w.scn.client, resource=w.scn.api, extra_claims={"tid": w.tid})
    with TestClient(_api(scheme)) as client:
        answers = {
            name: _get(client, "/weather", t)
            for name, t in [
                ("home", home),
                ("fabrikam", guest_tenant),
                ("northwind", stranger),
                ("mismatched", mismatched),
            ]
        }
    assert scheme.openid_config.issuer == "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert answers["home"].status_code == 200, answers["home"].text
    assert answers["home"].json()["tid"] == w.tid
    assert answers["fabrikam"].status_code == 200, answers["fabrikam"].text
    assert answers["fabrikam"].json()["tid"] == fabrikam.tenant_id
    assert answers["northwind"].status_code == 401
    assert answers["northwind"].json()["detail"]["message"] == "Tenant not allowed"
    assert answers["mismatched"].status_code == 401
    assert answers["mismatched"].json()["detail"]["message"] == "Token contains invalid claims"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def test_swagger_authorize_flow_signs_in_at_fakeentra(w: Served) -> None:
    # What Swagger UI does with the scheme's OpenAPI entry (usePkceWithAuthorizationCodeGrant, a public client).
    swagger = w.fake.add_public_client(w.scn.tenant, display_name="weather-swagger", redirect_uris=[SWAGGER_REDIRECT])
    w.fake.pre_authorize(w.scn.api, swagger, ["Weather.Read"])
    app = _api(_single_tenant(w))
    verifier, challenge = _pkce()
    with TestClient(app) as client, httpx2.Client(verify=w.served.ssl_context(), timeout=10) as browser:
        flows = client.get("/openapi.json").json()["components"]["securitySchemes"]["AzureAD_PKCE_single_tenant"]
        code_flow = flows["flows"]["authorizationCode"]
        assert code_flow["authorizationUrl"] == w.served.authorize_endpoint(w.tid)
        assert list(code_flow["scopes"]) == [w.api_scope("Weather.Read")]
        query = {
            "response_type": "code",
            "client_id": swagger.app_id,
            "redirect_uri": SWAGGER_REDIRECT,
            "scope": " ".join(code_flow["scopes"]),
            "state": "swagger-state",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        back = w.fake.sign_in(
            f"{code_flow['authorizationUrl']}?{urllib.parse.urlencode(query)}",
            username=w.scn.user.upn,
            password=w.scn.user_password,
            client=browser,
        )
        assert back["state"] == "swagger-state"
        tokens = browser.post(
            code_flow["tokenUrl"],
            data={
                "grant_type": "authorization_code",
                "client_id": swagger.app_id,
                "code": back["code"],
                "redirect_uri": SWAGGER_REDIRECT,
                "code_verifier": verifier,
                "scope": query["scope"],
            },
        )
        assert tokens.status_code == 200, tokens.text
        response = _get(client, "/weather", tokens.json()["access_token"])
    assert response.status_code == 200, response.text
    assert response.json()["oid"] == w.scn.user.object_id
    assert response.json()["azp"] == swagger.app_id
