"""FakeEntra's token endpoint over raw HTTP: every grant, every credential kind, Entra's error bodies."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote_plus

import httpx2
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entra_mw.testing import FakeClock, FakeEntra, Scenario
from entra_mw.testing._token_endpoint import fake_oidc_issuer

from ._tok_support import (
    EXCHANGE_SCOPE,
    agent_form,
    cert_assertion,
    claims_of,
    error_of,
    post,
    t1,
    t2,
    token_url,
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture
def s(fake_entra: FakeEntra) -> Scenario:
    return fake_entra.quickstart()


def cc_form(s: Scenario, **extra: str) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": s.client.app_id,
        "client_secret": s.client_secret,
        "scope": f"{s.api.app_id}/.default",
    }
    form.update(extra)
    return form


def user_token(fake: FakeEntra, s: Scenario, **kw: Any) -> str:
    """Alice's token for the blueprint (the middle tier), as the client app obtained it."""
    kw.setdefault("scopes", ["access_agent"])
    return fake.user_token(s.user, client=s.client, resource=s.blueprint, **kw)


def obo_form(s: Scenario, assertion: str, **extra: str) -> dict[str, str]:
    form = {
        "grant_type": JWT_BEARER,
        "requested_token_use": "on_behalf_of",
        "client_id": s.blueprint.app_id,
        "client_secret": s.blueprint_secret,
        "assertion": assertion,
        "scope": f"{s.api.app_id}/Weather.Read openid profile offline_access",
        "client_info": "1",
    }
    form.update(extra)
    return form


# -- response shape
# -------------------------------------------------------------------------------------------


def test_client_credentials_success_shape(fake_entra: FakeEntra, s: Scenario) -> None:
    response = post(fake_entra, s.tenant.tenant_id, cc_form(s), params={"caller-sdk-id": "x"})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int)
    assert 3600 <= body["expires_in"] <= 5400
    assert body["ext_expires_in"] == body["expires_in"]
    assert "refresh_token" not in body
    assert "refresh_in" not in body
    assert response.headers["cache-control"] == "no-store, no-cache"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["x-ms-request-id"]
    assert response.headers["x-ms-ests-server"]
    claims = fake_entra.decode(body["access_token"])
    assert claims["aud"] == s.api.app_id
    assert claims["azp"] == s.client.app_id
    assert claims["roles"] == ["Weather.Read.All"]
    assert claims["idtyp"] == "app"
    assert fake_entra.request_count("token:client_credentials") == 1


def test_refresh_in_only_for_long_lived_tokens(fake_entra: FakeEntra, s: Scenario) -> None:
    long_lived = fake_entra.issue_token(tenant=s.tenant, resource=s.api, client=s.client, lifetime=86400)
    from entra_mw.testing._token_endpoint import _app_response

    assert _app_response(long_lived, fake_entra.clock.time())["refresh_in"] == 43200


def test_domain_tenant_and_unknown_params_accepted(fake_entra: FakeEntra, s: Scenario) -> None:
    response = post(fake_entra, s.tenant.domain, cc_form(s, client_info="1", x_unknown="y"))
    assert response.status_code == 200


def test_basic_auth_secret(fake_entra: FakeEntra, s: Scenario) -> None:
    secret = fake_entra.add_secret(s.client, "a+b/c=d:e~f")
    raw = f"{quote_plus(s.client.app_id)}:{quote_plus(secret)}".encode()
    form = cc_form(s)
    del form["client_secret"]
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    assert post(fake_entra, s.tenant.tenant_id, form, headers=headers).status_code == 200
    bad = "Basic " + base64.b64encode(f"{s.client.app_id}:nope".encode()).decode()
    assert error_of(post(fake_entra, s.tenant.tenant_id, form, headers={"Authorization": bad})) == (
        401,
        "invalid_client",
        7000215,
    )


def test_error_body_shape_and_correlation_echo(fake_entra: FakeEntra, s: Scenario) -> None:
    cid = "0b9c2b8e-1a33-4c7a-9c55-3f0b5b6e1d21"
    response = post(
        fake_entra,
        s.tenant.tenant_id,
        cc_form(s, client_secret="wrong-secret-value"),
        headers={"client-request-id": cid},
    )
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    assert body["correlation_id"] == cid
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
    assert body["error_description"].startswith("AADSTS7000215: ")
    assert (
        f"\r\nTrace ID: {body['trace_id']}\r\nCorrelation ID: {cid}\r\nTimestamp: {body['timestamp']}"
        in (body["error_description"])
    )
    assert body["error_uri"] == "https://login.microsoftonline.com/error?code=7000215"
    assert "wrong-secret-value" not in response.text
    assert response.headers["cache-control"] == "no-store, no-cache"


def test_expired_secret(fake_entra: FakeEntra, s: Scenario) -> None:
    old = fake_entra.add_secret(s.client, expires_at=fake_entra.clock.time() - 1)
    response = post(fake_entra, s.tenant.tenant_id, cc_form(s, client_secret=old))
    assert error_of(response) == (401, "invalid_client", 7000222)


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"client_secret": ""}, (401, "invalid_client", 7000216)),
        ({"client_id": "00000000-0000-0000-0000-000000000001"}, (400, "unauthorized_client", 700016)),
        ({"client_id": ""}, (400, "invalid_request", 900144)),
        ({"grant_type": ""}, (400, "invalid_request", 900144)),
        ({"grant_type": "magic"}, (400, "unsupported_grant_type", 70003)),
        (
            {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange"},
            (400, "unsupported_grant_type", 82001),
        ),
        ({"scope": ""}, (400, "invalid_request", 900144)),
        ({"scope": "api://nowhere/.default"}, (400, "invalid_resource", 500011)),
        ({"scope": "User.Read"}, (400, "invalid_scope", 70011)),
        ({"scope": "{api}/Weather.Read"}, (400, "invalid_scope", 70011)),
        ({"scope": "{api}/.default {blueprint}/.default"}, (400, "invalid_scope", 700022)),
        (
            {"client_assertion": "x.y.z", "client_assertion_type": ASSERTION_TYPE},
            (400, "invalid_request", 9002324),
        ),
        ({"client_secret": "", "client_assertion_type": ASSERTION_TYPE}, (400, "invalid_request", 900144)),
        ({"fmi_path": "{agent}"}, (400, "invalid_request", 9002313)),
    ],
)
def test_client_credentials_errors(
    fake_entra: FakeEntra, s: Scenario, form: dict[str, str], expected: tuple[int, str, int]
) -> None:
    values = {
        k: v.format(api=s.api.app_id, blueprint=s.blueprint.app_id, agent=s.agent.app_id) for k, v in form.items()
    }
    response = post(fake_entra, s.tenant.tenant_id, cc_form(s, **values))
    assert error_of(response) == expected


def test_unknown_tenant(fake_entra: FakeEntra, s: Scenario) -> None:
    assert error_of(post(fake_entra, "nowhere.example", cc_form(s))) == (400, "invalid_request", 90002)
    assert error_of(post(fake_entra, "common", cc_form(s)))[2] == 50059


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b'{"grant_type": "client_credentials"}', "application/json"),
        (b"grant_type=client_credentials", "text/plain"),
        (b"", "application/x-www-form-urlencoded"),
    ],
)
def test_non_form_bodies(fake_entra: FakeEntra, s: Scenario, content: bytes, ctype: str) -> None:
    response = post(fake_entra, s.tenant.tenant_id, content=content, headers={"content-type": ctype})
    assert error_of(response) == (400, "invalid_request", 900144)


def test_malformed_form_bodies(fake_entra: FakeEntra, s: Scenario) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert post(fake_entra, s.tenant.tenant_id, content=b"\xff\xfe=\x00", headers=form).status_code == 400
    dup = b"grant_type=client_credentials&grant_type=password"
    assert error_of(post(fake_entra, s.tenant.tenant_id, content=dup, headers=form))[2] == 9002313
    many = "&".join(f"k{i}=v" for i in range(500)).encode()
    assert post(fake_entra, s.tenant.tenant_id, content=many, headers=form).status_code == 400


def test_get_is_refused(fake_entra: FakeEntra, s: Scenario) -> None:
    with httpx2.Client(transport=fake_entra.transport) as client:
        response = client.get(token_url(s.tenant.tenant_id))
    assert error_of(response) == (400, "invalid_request", 900561)


def test_v1_endpoint_with_resource(fake_entra: FakeEntra, s: Scenario) -> None:
    form = cc_form(s, resource=s.api.app_id)
    del form["scope"]
    response = post(fake_entra, s.tenant.tenant_id, form, v1=True)
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body["expires_in"], str)
    assert body["resource"] == s.api.app_id
    assert int(body["expires_on"]) == int(fake_entra.clock.time()) + int(body["expires_in"])


# -- certificate assertions
# ------------------------------------------------------------------------------------


@pytest.fixture
def cert(fake_entra: FakeEntra, s: Scenario) -> tuple[bytes, bytes]:
    return fake_entra.add_certificate(s.client)


def cert_form(s: Scenario, assertion: str) -> dict[str, str]:
    form = cc_form(s, client_assertion=assertion, client_assertion_type=ASSERTION_TYPE)
    del form["client_secret"]
    return form


@pytest.mark.parametrize(("alg", "kind"), [("PS256", "x5t#S256"), ("RS256", "x5t"), ("RS256", "x5c")])
def test_certificate_assertion_accepted(
    fake_entra: FakeEntra, s: Scenario, cert: tuple[bytes, bytes], alg: str, kind: str
) -> None:
    assertion = cert_assertion(
        *cert, client_id=s.client.app_id, audience=token_url(s.tenant.tenant_id), alg=alg, header_kind=kind
    )
    response = post(fake_entra, s.tenant.tenant_id, cert_form(s, assertion))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["azpacr"] == "2"


def test_certificate_assertion_audience_by_domain(
    fake_entra: FakeEntra, s: Scenario, cert: tuple[bytes, bytes]
) -> None:
    assertion = cert_assertion(*cert, client_id=s.client.app_id, audience=token_url(s.tenant.domain))
    assert post(fake_entra, s.tenant.tenant_id, cert_form(s, assertion)).status_code == 200


def test_certificate_assertion_failures(fake_entra: FakeEntra, s: Scenario, cert: tuple[bytes, bytes]) -> None:
    tid = s.tenant.tenant_id
    aud = token_url(tid)

    def code(assertion: str) -> tuple[int, str, int]:
        return error_of(post(fake_entra, tid, cert_form(s, assertion)))

    assert code(cert_assertion(*cert, client_id=s.client.app_id, audience="https://elsewhere/token")) == (
        401,
        "invalid_client",
        50012,
    )
    assert code(cert_assertion(*cert, client_id=s.client.app_id, audience=aud, now=1000))[2] == 700024
    assert code(cert_assertion(*cert, client_id=s.client.app_id, audience=aud, lifetime=10**400))[2] == 700024
    assert code(cert_assertion(*cert, client_id=s.client.app_id, audience=aud, issuer=s.api.app_id))[2] == 700021
    other_key, other_cert = fake_entra.add_certificate(s.api)  # a certificate not registered on the client
    assert code(cert_assertion(other_key, other_cert, client_id=s.client.app_id, audience=aud))[2] == 700027
    # the registered certificate's thumbprint, signed with another key
    forged = cert_assertion(other_key, cert[1], client_id=s.client.app_id, audience=aud)
    assert code(forged) == (401, "invalid_client", 700027)
    hs = jwt.encode({"iss": s.client.app_id}, "k" * 32, algorithm="HS256", headers={"x5t": "abc"})
    assert code(hs)[2] == 700027
    assert code("not-a-jwt") == (401, "invalid_client", 50027)


def test_certificate_assertion_expiry_uses_both_clocks(
    fake_entra: FakeEntra, s: Scenario, cert: tuple[bytes, bytes]
) -> None:
    # Signed at the FakeClock's time (far from the system clock): valid on FakeEntra's clock.
    now = fake_entra.clock.time()
    ok = cert_assertion(*cert, client_id=s.client.app_id, audience=token_url(s.tenant.tenant_id), now=now)
    assert post(fake_entra, s.tenant.tenant_id, cert_form(s, ok)).status_code == 200


# -- federated assertions
# ---------------------------------------------------------------------------------------


K8S = "https://oidc.prod-aks.azure.com/00000000-aaaa/cluster/"
SA = "system:serviceaccount:agents:weather"


def fic_form(s: Scenario, assertion: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": s.blueprint.app_id,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "scope": EXCHANGE_SCOPE,
        "fmi_path": s.agent.app_id,
    }


def test_kubernetes_federated_assertion(fake_entra: FakeEntra, s: Scenario) -> None:
    issuer = fake_oidc_issuer(fake_entra, K8S)
    assert fake_oidc_issuer(fake_entra, K8S) is issuer
    fake_entra.add_federated_credential(s.blueprint, issuer=K8S, subject=SA)
    assertion = issuer.mint(SA, "api://AzureADTokenExchange")
    claims = claims_of(assertion)
    assert claims["kubernetes.io"]["namespace"] == "agents"
    assert claims["aud"] == ["api://AzureADTokenExchange"]
    response = post(fake_entra, s.tenant.tenant_id, fic_form(s, assertion))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["aud"] == "api://AzureADTokenExchange"
    assert issuer.jwks()["keys"][0]["kid"] == issuer.kid


def test_federated_assertion_failures(fake_entra: FakeEntra, s: Scenario, fake_clock: FakeClock) -> None:
    issuer = fake_oidc_issuer(fake_entra, K8S)
    fake_entra.add_federated_credential(s.blueprint, issuer=K8S, subject=SA)
    tid = s.tenant.tenant_id

    def code(assertion: str) -> tuple[int, str, int]:
        return error_of(post(fake_entra, tid, fic_form(s, assertion)))

    assert code(issuer.mint(SA.upper(), "api://AzureADTokenExchange")) == (401, "invalid_client", 700213)
    assert code(issuer.mint(SA, "api://somewhere-else")) == (401, "invalid_client", 700212)
    stranger = fake_oidc_issuer(fake_entra, "https://token.actions.githubusercontent.com")
    assert code(stranger.mint(SA, "api://AzureADTokenExchange")) == (401, "invalid_client", 700211)
    # a token claiming the trusted issuer, signed by another issuer's key
    claims = claims_of(issuer.mint(SA, "api://AzureADTokenExchange"))
    forged = jwt.encode(claims, fake_entra.signing_key().private_key, algorithm="RS256", headers={"kid": issuer.kid})
    assert code(forged)[2] == 700027
    fake_entra.add_federated_credential(s.blueprint, issuer="https://unknown.example/", subject=SA)
    unknown = jwt.encode({**claims, "iss": "https://unknown.example/"}, fake_entra.signing_key().private_key, "RS256")
    assert code(unknown)[2] == 50166
    old = issuer.mint(SA, "api://AzureADTokenExchange", lifetime=600)
    fake_clock.advance(3600)
    assert code(old) == (401, "invalid_client", 700024)


def test_entra_issued_federated_credential(fake_entra: FakeEntra, s: Scenario) -> None:
    # A managed identity's app-only token (here: the api's own) trusted by the blueprint through a FIC.
    iss = f"https://login.microsoftonline.com/{s.tenant.tenant_id}/v2.0"
    fake_entra.add_federated_credential(s.blueprint, issuer=iss, subject=s.api.sp_object_id)
    mi_token = fake_entra.app_token(s.api, resource="api://AzureADTokenExchange")
    assert post(fake_entra, s.tenant.tenant_id, fic_form(s, mi_token)).status_code == 200
    user = fake_entra.user_token(s.user, client=s.client, resource=s.blueprint)
    assert error_of(post(fake_entra, s.tenant.tenant_id, fic_form(s, user)))[2] == 700229


# -- agent identities
# ---------------------------------------------------------------------------------------------


def test_t1_shape(fake_entra: FakeEntra, s: Scenario) -> None:
    claims = fake_entra.decode(t1(fake_entra, s))
    assert claims["aud"] == "api://AzureADTokenExchange"
    assert claims["idtyp"] == "app"
    assert claims["azp"] == s.blueprint.app_id
    assert claims["sub"].endswith("/" + s.agent.app_id)


def test_fmi_path_rules(fake_entra: FakeEntra, s: Scenario) -> None:
    base = {
        "grant_type": "client_credentials",
        "client_id": s.blueprint.app_id,
        "client_secret": s.blueprint_secret,
        "scope": EXCHANGE_SCOPE,
    }
    tid = s.tenant.tenant_id
    assert error_of(post(fake_entra, tid, {**base, "fmi_path": "not-an-agent"}))[2] == 9002313
    bad_scope = {**base, "fmi_path": s.agent.app_id, "scope": f"{s.api.app_id}/.default"}
    assert error_of(post(fake_entra, tid, bad_scope)) == (400, "invalid_scope", 70011)
    other_bp = fake_entra.add_blueprint(s.tenant, display_name="other")
    other_agent = fake_entra.add_agent_identity(other_bp)
    assert error_of(post(fake_entra, tid, {**base, "fmi_path": other_agent.app_id}))[2] == 9002313


def test_autonomous_agent_token_and_t2(fake_entra: FakeEntra, s: Scenario) -> None:
    form = agent_form(fake_entra, s, grant_type="client_credentials", scope=f"{s.api.app_id}/.default")
    response = post(fake_entra, s.tenant.tenant_id, form)
    assert response.status_code == 200, response.text
    claims = fake_entra.decode(response.json()["access_token"])
    assert claims["azp"] == s.agent.app_id
    assert claims["xms_par_app_azp"] == s.blueprint.app_id
    assert claims["roles"] == ["Weather.Read.All"]
    assert "11" in claims["xms_sub_fct"].split()
    t2_claims = fake_entra.decode(t2(fake_entra, s))
    assert t2_claims["aud"] == "api://AzureADTokenExchange"
    assert t2_claims["azp"] == s.agent.app_id


def test_agent_assertion_failures(fake_entra: FakeEntra, s: Scenario, fake_clock: FakeClock) -> None:
    tid = s.tenant.tenant_id
    scope = f"{s.api.app_id}/.default"

    def code(assertion: str) -> tuple[int, str, int]:
        form = {
            "grant_type": "client_credentials",
            "client_id": s.agent.app_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": scope,
        }
        return error_of(post(fake_entra, tid, form))

    other = fake_entra.add_agent_identity(s.blueprint, display_name="other-agent")
    assert code(t1(fake_entra, s, other.app_id)) == (401, "invalid_client", 7002137)
    own_exchange = fake_entra.app_token(s.blueprint, resource="api://AzureADTokenExchange")
    assert code(own_exchange)[2] == 7002137
    assert code(t2(fake_entra, s))[2] == 700211  # T2 is issued to the agent, not to its blueprint
    assert code(user_token(fake_entra, s))[0:2] == (401, "invalid_client")
    assert code(fake_entra.app_token(s.blueprint, resource=s.api))[2] == 700212
    forged = fake_entra.mint_raw({"alg": "RS256", "kid": "nope"}, claims_of(t1(fake_entra, s)))
    assert code(forged)[2] == 700027
    stale = t1(fake_entra, s)
    fake_clock.advance(6 * 3600)
    assert code(stale) == (401, "invalid_client", 700024)
    secret = {
        "grant_type": "client_credentials",
        "client_id": s.agent.app_id,
        "client_secret": "x",
        "scope": scope,
    }
    assert error_of(post(fake_entra, tid, secret)) == (401, "invalid_client", 7000215)


def test_t1_from_the_wrong_tenant(fake_entra: FakeEntra, s: Scenario) -> None:
    # A multi-tenant blueprint's agent lives in another tenant; T1 must be requested there (spec §3.1).
    other = fake_entra.add_tenant(domain="fabrikam.onmicrosoft.com")
    bp = fake_entra.add_blueprint(s.tenant, display_name="mt", multi_tenant=True)
    secret = fake_entra.add_secret(bp)
    agent = fake_entra.add_agent_identity(bp, tenant=other)
    form = {
        "grant_type": "client_credentials",
        "client_id": bp.app_id,
        "client_secret": secret,
        "scope": EXCHANGE_SCOPE,
        "fmi_path": agent.app_id,
    }
    wrong = post(fake_entra, s.tenant.tenant_id, form).json()["access_token"]
    right = post(fake_entra, other.tenant_id, form).json()["access_token"]
    leg2 = {
        "grant_type": "client_credentials",
        "client_id": agent.app_id,
        "client_assertion_type": ASSERTION_TYPE,
        "scope": EXCHANGE_SCOPE,
    }
    assert error_of(post(fake_entra, other.tenant_id, {**leg2, "client_assertion": wrong}))[2] == 700211
    assert post(fake_entra, other.tenant_id, {**leg2, "client_assertion": right}).status_code == 200
    # the agent does not exist in the blueprint's home tenant
    assert error_of(post(fake_entra, s.tenant.tenant_id, {**leg2, "client_assertion": right}))[2] == 700016


# -- on-behalf-of
# ------------------------------------------------------------------------------------------------


def test_obo_success(fake_entra: FakeEntra, s: Scenario) -> None:
    response = post(fake_entra, s.tenant.tenant_id, obo_form(s, user_token(fake_entra, s)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"].split()[0] == f"{s.api.app_id}/Weather.Read"
    assert body["refresh_token"]
    assert body["id_token"]
    claims = fake_entra.decode(body["access_token"])
    assert claims["scp"] == "Weather.Read"
    assert claims["oid"] == s.user.object_id
    assert claims["azp"] == s.blueprint.app_id
    id_claims = fake_entra.decode(body["id_token"])
    assert id_claims["aud"] == s.blueprint.app_id
    assert id_claims["preferred_username"] == s.user.upn
    assert id_claims["iss"] == f"https://login.microsoftonline.com/{s.tenant.tenant_id}/v2.0"
    info = json.loads(base64.urlsafe_b64decode(body["client_info"] + "=="))
    assert info == {"uid": s.user.object_id, "utid": s.tenant.tenant_id}
    assert fake_entra.request_count("token:jwt_bearer") == 1


def test_obo_without_oidc_scopes(fake_entra: FakeEntra, s: Scenario) -> None:
    form = obo_form(s, user_token(fake_entra, s), scope=f"{s.api.app_id}/.default")
    del form["client_info"]
    body = post(fake_entra, s.tenant.tenant_id, form).json()
    assert "refresh_token" not in body
    assert "id_token" not in body
    assert "client_info" not in body
    assert fake_entra.decode(body["access_token"])["scp"] == "Weather.Read"


def test_obo_failures(fake_entra: FakeEntra, s: Scenario, fake_clock: FakeClock) -> None:
    tid = s.tenant.tenant_id

    def code(assertion: str, **extra: str) -> tuple[int, str, int]:
        return error_of(post(fake_entra, tid, obo_form(s, assertion, **extra)))

    for_api = fake_entra.user_token(s.user, client=s.client, resource=s.api)
    assert code(for_api) == (400, "invalid_grant", 500131)
    assert code(fake_entra.app_token(s.client, resource=s.blueprint)) == (400, "invalid_grant", 7000114)
    assert code("garbage") == (400, "invalid_grant", 50027)
    forged = fake_entra.mint_raw({"alg": "RS256", "kid": "x"}, claims_of(user_token(fake_entra, s)), key=None)
    assert code(forged) == (400, "invalid_grant", 50013)
    assert code(user_token(fake_entra, s), scope=f"{s.api.app_id}/Nope.Write") == (
        400,
        "invalid_client",
        65005,
    )
    assert code(user_token(fake_entra, s), requested_token_use="")[2] == 900144
    form = obo_form(s, user_token(fake_entra, s))
    del form["client_secret"]
    assert error_of(post(fake_entra, tid, form)) == (401, "invalid_client", 7000218)
    stale = user_token(fake_entra, s, lifetime=600)
    fake_clock.advance(3600)
    assert code(stale) == (400, "invalid_grant", 500133)


def test_obo_consent_required(fake_entra: FakeEntra, s: Scenario) -> None:
    mid = fake_entra.add_app(s.tenant, display_name="middle", scopes=("access",))
    secret = fake_entra.add_secret(mid)
    assertion = fake_entra.user_token(s.user, client=s.client, resource=mid, scopes=["access"])
    form = obo_form(s, assertion, client_id=mid.app_id, client_secret=secret)
    response = post(fake_entra, s.tenant.tenant_id, form)
    assert error_of(response) == (400, "invalid_grant", 65001)
    assert response.json()["suberror"] == "consent_required"
    fake_entra.grant_consent(mid, s.api, ["Weather.Read"], user=s.user)
    assert post(fake_entra, s.tenant.tenant_id, form).status_code == 200


def test_obo_mfa_claims_challenge(fake_entra: FakeEntra, s: Scenario) -> None:
    bob = fake_entra.add_user(s.tenant, upn="bob@contoso.onmicrosoft.com", mfa_required=True)
    assertion = fake_entra.user_token(bob, client=s.client, resource=s.blueprint, scopes=["access_agent"])
    response = post(fake_entra, s.tenant.tenant_id, obo_form(s, assertion))
    assert error_of(response) == (400, "interaction_required", 50079)
    challenge = json.loads(response.json()["claims"])
    assert "access_token" in challenge
    answered = obo_form(s, assertion, claims=response.json()["claims"])
    assert post(fake_entra, s.tenant.tenant_id, answered).status_code == 200
    with_mfa = fake_entra.user_token(
        bob,
        client=s.client,
        resource=s.blueprint,
        scopes=["access_agent"],
        extra_claims={"amr": ["pwd", "mfa"]},
    )
    assert post(fake_entra, s.tenant.tenant_id, obo_form(s, with_mfa)).status_code == 200


def test_agent_obo(fake_entra: FakeEntra, s: Scenario) -> None:
    form = agent_form(
        fake_entra,
        s,
        grant_type=JWT_BEARER,
        requested_token_use="on_behalf_of",
        assertion=user_token(fake_entra, s),
        scope=f"{s.api.app_id}/Weather.Read openid profile offline_access",
    )
    response = post(fake_entra, s.tenant.tenant_id, form)
    assert response.status_code == 200, response.text
    claims = fake_entra.decode(response.json()["access_token"])
    assert claims["azp"] == s.agent.app_id
    assert claims["oid"] == s.user.object_id
    assert claims["xms_par_app_azp"] == s.blueprint.app_id
    assert claims["idtyp"] == "user"
    # Tc must target the blueprint, not the downstream API (spec §3.4)
    wrong = {**form, "assertion": fake_entra.user_token(s.user, client=s.client, resource=s.api)}
    assert error_of(post(fake_entra, s.tenant.tenant_id, wrong)) == (400, "invalid_grant", 50013)


def test_obo_on_common_uses_the_user_tenant(fake_entra: FakeEntra, s: Scenario) -> None:
    assert post(fake_entra, "organizations", obo_form(s, user_token(fake_entra, s))).status_code == 200


# -- user_fic
# -----------------------------------------------------------------------------------------------------


def fic_user_form(fake: FakeEntra, s: Scenario, **extra: str) -> dict[str, str]:
    form = agent_form(
        fake,
        s,
        grant_type="user_fic",
        user_federated_identity_credential=t2(fake, s),
        scope=f"{s.api.app_id}/Weather.Read openid profile offline_access",
        client_info="1",
    )
    form.update(extra)
    return {k: v for k, v in form.items() if v}


@pytest.mark.parametrize("by", ["username", "user_id"])
def test_user_fic(fake_entra: FakeEntra, s: Scenario, by: str) -> None:
    who = s.agent_user.upn if by == "username" else s.agent_user.object_id
    response = post(fake_entra, s.tenant.tenant_id, fic_user_form(fake_entra, s, **{by: who}))
    assert response.status_code == 200, response.text
    body = response.json()
    claims = fake_entra.decode(body["access_token"])
    assert claims["oid"] == s.agent_user.object_id
    assert "13" in claims["xms_sub_fct"].split()
    assert claims["azp"] == s.agent.app_id
    assert claims["scp"] == "Weather.Read"
    assert body["refresh_token"]
    assert body["id_token"]
    assert body["client_info"]
    assert fake_entra.request_count("token:user_fic") == 1


def test_user_fic_failures(fake_entra: FakeEntra, s: Scenario) -> None:
    tid = s.tenant.tenant_id
    both = fic_user_form(fake_entra, s, username=s.agent_user.upn, user_id=s.agent_user.object_id)
    assert error_of(post(fake_entra, tid, both)) == (400, "invalid_request", 9002313)
    assert error_of(post(fake_entra, tid, fic_user_form(fake_entra, s)))[2] == 900144
    unknown = fic_user_form(fake_entra, s, username="ghost@contoso.onmicrosoft.com")
    assert error_of(post(fake_entra, tid, unknown)) == (400, "invalid_grant", 50034)
    other = fake_entra.add_agent_identity(s.blueprint, display_name="other")
    foreign = fake_entra.add_agent_user(other)
    assert error_of(post(fake_entra, tid, fic_user_form(fake_entra, s, username=foreign.upn)))[1] == "invalid_grant"
    with_t1 = fic_user_form(
        fake_entra, s, username=s.agent_user.upn, user_federated_identity_credential=t1(fake_entra, s)
    )
    assert error_of(post(fake_entra, tid, with_t1)) == (400, "invalid_grant", 50013)
    not_agent = {
        "grant_type": "user_fic",
        "client_id": s.client.app_id,
        "client_secret": s.client_secret,
        "user_federated_identity_credential": t2(fake_entra, s),
        "username": s.agent_user.upn,
        "scope": f"{s.api.app_id}/Weather.Read",
    }
    assert error_of(post(fake_entra, tid, not_agent))[1] == "unsupported_grant_type"


# -- refresh tokens
# -------------------------------------------------------------------------------------------------


def test_refresh_token_redeem(fake_entra: FakeEntra, s: Scenario, fake_clock: FakeClock) -> None:
    tid = s.tenant.tenant_id
    rt = post(fake_entra, tid, obo_form(s, user_token(fake_entra, s))).json()["refresh_token"]
    form = {
        "grant_type": "refresh_token",
        "client_id": s.blueprint.app_id,
        "client_secret": s.blueprint_secret,
        "refresh_token": rt,
        "scope": f"{s.api.app_id}/Weather.Read openid offline_access",
    }
    response = post(fake_entra, tid, form)
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"] != rt
    assert fake_entra.decode(response.json()["access_token"])["oid"] == s.user.object_id
    assert fake_entra.request_count("token:refresh_token") == 1
    assert error_of(post(fake_entra, tid, {**form, "refresh_token": "nope"})) == (400, "invalid_grant", 70000)
    other = {**form, "client_id": s.client.app_id, "client_secret": s.client_secret}
    assert error_of(post(fake_entra, tid, other))[2] == 70000
    no_secret = {k: v for k, v in form.items() if k != "client_secret"}
    assert error_of(post(fake_entra, tid, no_secret)) == (401, "invalid_client", 7000218)
    fake_clock.advance(91 * 24 * 3600)
    assert error_of(post(fake_entra, tid, form)) == (400, "invalid_grant", 700082)


def test_agent_user_refresh_token(fake_entra: FakeEntra, s: Scenario) -> None:
    tid = s.tenant.tenant_id
    rt = post(fake_entra, tid, fic_user_form(fake_entra, s, username=s.agent_user.upn)).json()["refresh_token"]
    form = agent_form(fake_entra, s, grant_type="refresh_token", refresh_token=rt, scope=f"{s.api.app_id}/Weather.Read")
    response = post(fake_entra, tid, form)
    assert response.status_code == 200, response.text
    assert fake_entra.decode(response.json()["access_token"])["oid"] == s.agent_user.object_id


# -- password (test-only ROPC)
# -----------------------------------------------------------------------------------


def ropc_form(s: Scenario, **extra: str) -> dict[str, str]:
    form = {
        "grant_type": "password",
        "client_id": s.client.app_id,
        "client_secret": s.client_secret,
        "username": s.user.upn,
        "password": s.user_password,
        "scope": f"{s.api.app_id}/Weather.Read openid profile offline_access",
    }
    form.update(extra)
    return {k: v for k, v in form.items() if v}


def test_password_grant(fake_entra: FakeEntra, s: Scenario) -> None:
    response = post(fake_entra, s.tenant.tenant_id, ropc_form(s))
    assert response.status_code == 200, response.text
    claims = fake_entra.decode(response.json()["access_token"])
    assert claims["oid"] == s.user.object_id
    assert claims["aud"] == s.api.app_id
    assert claims["scp"] == "Weather.Read"
    assert fake_entra.request_count("token:password") == 1
    # a public client (no secret) may sign in without a consent grant
    public = fake_entra.add_app(s.tenant, display_name="cli")
    assert post(fake_entra, "common", ropc_form(s, client_id=public.app_id, client_secret="")).status_code == 200


def test_password_failures(fake_entra: FakeEntra, s: Scenario) -> None:
    tid = s.tenant.tenant_id
    assert error_of(post(fake_entra, tid, ropc_form(s, password="wrong"))) == (400, "invalid_grant", 50126)
    assert error_of(post(fake_entra, tid, ropc_form(s, username="nobody@contoso.onmicrosoft.com")))[2] == 50034
    assert error_of(post(fake_entra, tid, ropc_form(s, username=s.agent_user.upn)))[2] == 50126
    assert error_of(post(fake_entra, tid, ropc_form(s, password="")))[2] == 900144
    scope = f"{s.blueprint.app_id}/access_agent"
    assert (
        error_of(
            post(
                fake_entra,
                tid,
                ropc_form(s, client_id=s.blueprint.app_id, client_secret=s.blueprint_secret, scope=scope),
            )
        )[2]
        == 65001
    )
    fake_entra.add_user(s.tenant, upn="carol@contoso.onmicrosoft.com", password="pw", mfa_required=True)
    mfa = ropc_form(s, username="carol@contoso.onmicrosoft.com", password="pw")
    response = post(fake_entra, tid, mfa)
    assert error_of(response) == (400, "interaction_required", 50076)
    answered = post(fake_entra, tid, {**mfa, "claims": response.json()["claims"]})
    assert answered.status_code == 200
    assert "mfa" in fake_entra.decode(answered.json()["access_token"])["amr"]


# -- robustness
# -------------------------------------------------------------------------------------------------


FIELDS = [
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
    "assertion",
    "requested_token_use",
    "refresh_token",
    "username",
    "user_id",
    "password",
    "fmi_path",
    "user_federated_identity_credential",
    "claims",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    form=st.dictionaries(
        st.sampled_from(FIELDS),
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(
                [
                    "client_credentials",
                    JWT_BEARER,
                    "user_fic",
                    "refresh_token",
                    "password",
                    ASSERTION_TYPE,
                    "on_behalf_of",
                    "e30.e30.",
                    "eyJhbGciOiJSUzI1NiJ9.W10.AAAA",
                    "a.b.c",
                    "api://AzureADTokenExchange/.default",
                ]
            ),
        ),
    ),
    tenant=st.sampled_from(["common", "organizations", "contoso.onmicrosoft.com", "x"]),
)
def test_any_form_gets_an_oauth_answer(fake_entra: FakeEntra, form: dict[str, str], tenant: str) -> None:
    response = post(fake_entra, tenant, form)
    assert response.status_code in {200, 400, 401}
    body = response.json()
    if response.status_code != 200:
        assert body["error"]
        assert body["error_codes"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "x5t", "x5t#S256", "x5c", "kid"]),
        st.one_of(st.text(max_size=8), st.integers(), st.lists(st.text(max_size=4), max_size=2)),
    ),
    payload=st.dictionaries(
        st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "tid", "azp", "idtyp"]),
        st.one_of(st.text(max_size=8), st.floats(allow_nan=True), st.integers(), st.none()),
    ),
)
def test_any_client_assertion_gets_an_oauth_answer(
    fake_entra: FakeEntra, s: Scenario, header: dict[str, Any], payload: dict[str, Any]
) -> None:
    def seg(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    assertion = f"{seg(header)}.{seg(payload)}.c2ln"
    for client_id in (s.client.app_id, s.agent.app_id):
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": f"{s.api.app_id}/.default",
        }
        assert post(fake_entra, s.tenant.tenant_id, form).status_code in {400, 401}


@pytest.mark.parametrize("asked", ["User.Read", "https://graph.microsoft.com/User.Read"])
def test_graph_permissions_are_answered_by_their_short_names(fake_entra: FakeEntra, s: Scenario, asked: str) -> None:
    # Entra answers Graph's scopes as `User.Read`; MSAL finds its cached Graph token by that string.
    fake_entra.grant_consent(s.client, fake_entra.microsoft_graph(), ["User.Read"])
    response = post(fake_entra, s.tenant.tenant_id, ropc_form(s, scope=f"{asked} openid profile offline_access"))
    assert response.status_code == 200, response.text
    granted = response.json()["scope"].split()
    assert "User.Read" in granted
    assert not any(g.startswith("https://graph.microsoft.com") for g in granted)
    # Other resources keep the full form.
    other = post(fake_entra, s.tenant.tenant_id, ropc_form(s)).json()["scope"].split()
    assert f"{s.api.app_id}/Weather.Read" in other or any(g.endswith("/Weather.Read") and "/" in g for g in other)
