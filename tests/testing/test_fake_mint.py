"""Minted tokens have Entra's shapes (spec §3.7, §4): v1/v2, app/user, agent, T1; and raw attack tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from entra_mw.testing import FakeClock, FakeEntra, Scenario

LOGIN = "https://login.microsoftonline.com"
_OPTIONS: Any = {"verify_nbf": False, "verify_iat": False}  # FakeClock time is in 2027


def _verify(fake: FakeEntra, token: str, *, audience: str, tenant: str = "common") -> dict[str, Any]:
    """Verify like a resource would: key by kid from the JWKS (PyJWT), RS256, audience."""
    with httpx2.Client(transport=fake.transport) as client:
        jwks = client.get(f"{LOGIN}/{tenant}/discovery/v2.0/keys").json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=["RS256"], audience=audience, options=_OPTIONS)
    return claims


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_v2_app_token(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)
    assert jwt.get_unverified_header(token) == {"typ": "JWT", "alg": "RS256", "kid": fake_entra.current_kid}
    c = _verify(fake_entra, token, audience=s.api.app_id)
    tid = s.tenant.tenant_id
    assert c["iss"] == f"{LOGIN}/{tid}/v2.0"
    assert c["ver"] == "2.0"
    assert c["tid"] == tid
    assert c["azp"] == s.client.app_id
    assert c["azpacr"] == "1"
    assert "appid" not in c
    assert c["idtyp"] == "app"
    assert c["oid"] == c["sub"] == s.client.sp_object_id
    assert c["roles"] == ["Weather.Read.All"]
    assert "scp" not in c
    assert c["iat"] == c["nbf"] == int(fake_clock.time())
    assert 3600 <= c["exp"] - c["iat"] <= 5400
    assert {"uti", "rh", "aio"} <= set(c)
    assert not any(k.startswith("xms_") for k in c)


def test_v1_tokens(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    api1 = fake_entra.add_app(s.tenant, display_name="legacy", access_token_version=1, scopes=("Read",))
    fake_entra.grant_app_roles(s.client, api1, ["Legacy.All"])
    app = fake_entra.app_token(s.client, resource=api1)
    header = jwt.get_unverified_header(app)
    assert header["x5t"] == header["kid"] == fake_entra.current_kid
    c = _verify(fake_entra, app, audience=f"api://{api1.app_id}")
    assert c["iss"] == f"https://sts.windows.net/{s.tenant.tenant_id}/"
    assert c["ver"] == "1.0"
    assert c["appid"] == s.client.app_id
    assert c["appidacr"] == "1"
    assert "azp" not in c
    assert c["roles"] == ["Legacy.All"]
    user = fake_entra.user_token(s.user, client=s.client, resource=api1, scopes=["Read"])
    u = _verify(fake_entra, user, audience=f"api://{api1.app_id}")
    assert u["upn"] == u["unique_name"] == s.user.upn
    assert u["scp"] == "Read"
    assert u["idtyp"] == "user"
    # version can be forced either way
    v1 = fake_entra.app_token(s.client, resource=s.api, version=1)
    assert jwt.decode(v1, options={"verify_signature": False})["aud"] == f"api://{s.api.app_id}"


def test_v2_user_token(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.user_token(s.user, client=s.client, resource=s.api)
    c = _verify(fake_entra, token, audience=s.api.app_id)
    assert c["idtyp"] == "user"
    assert c["scp"] == "Weather.Read"
    assert "roles" not in c
    assert c["oid"] == s.user.object_id
    assert c["name"] == "Alice Example"
    assert c["preferred_username"] == s.user.upn
    assert "upn" not in c
    assert c["sub"] != s.user.object_id
    again = fake_entra.decode(fake_entra.user_token(s.user, client=s.client, resource=s.api))
    other_client = fake_entra.add_app(s.tenant, display_name="other")
    other = fake_entra.decode(fake_entra.user_token(s.user, client=other_client, resource=s.api))
    assert again["sub"] == c["sub"]  # stable per (user, client)
    assert other["sub"] != c["sub"]  # pairwise


def test_scopes_are_normalised(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    api = s.api
    explicit = fake_entra.user_token(
        s.user, client=s.client, resource=api, scopes=[f"api://{api.app_id}/Weather.Read", "openid", "Extra"]
    )
    assert fake_entra.decode(explicit)["scp"] == "Weather.Read Extra"
    default = fake_entra.user_token(s.user, client=s.client, resource=api, scopes=[f"api://{api.app_id}/.default"])
    assert fake_entra.decode(default)["scp"] == "Weather.Read"


def test_lifetimes_are_deterministic_per_fake() -> None:
    a, b = FakeEntra(clock=FakeClock()), FakeEntra(clock=FakeClock())
    assert [a.default_lifetime() for _ in range(5)] == [b.default_lifetime() for _ in range(5)]
    s = a.quickstart()
    c = a.decode(a.app_token(s.client, resource=s.api, lifetime=120))
    assert c["exp"] - c["iat"] == 120


def _agent_claims(c: dict[str, Any], s: Scenario) -> None:
    assert c["xms_par_app_azp"] == s.blueprint.app_id
    assert "11" in c["xms_act_fct"].split()


def test_autonomous_agent_token(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    c = _verify(fake_entra, fake_entra.app_token(s.agent, resource=s.api), audience=s.api.app_id)
    _agent_claims(c, s)
    assert c["azp"] == s.agent.app_id
    assert c["azpacr"] == "2"
    assert c["idtyp"] == "app"
    assert c["oid"] == s.agent.sp_object_id
    assert c["xms_idrel"] == "7"
    assert "11" in c["xms_sub_fct"].split()
    assert c["roles"] == ["Weather.Read.All"]


def test_agent_user_token(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    c = _verify(fake_entra, fake_entra.user_token(s.agent_user, client=s.agent, resource=s.api), audience=s.api.app_id)
    _agent_claims(c, s)
    assert c["idtyp"] == "user"
    assert c["oid"] == s.agent_user.object_id
    assert c["xms_idrel"] == "1"
    assert "13" in c["xms_sub_fct"].split()
    assert c["scp"] == "Weather.Read"


def test_agent_obo_token_for_a_human(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    c = fake_entra.decode(fake_entra.user_token(s.user, client=s.agent, resource=s.api))
    _agent_claims(c, s)
    assert c["oid"] == s.user.object_id
    assert c["xms_idrel"] == "1"
    assert "xms_sub_fct" not in c  # not specified for agent OBO (spec §3.7)


def test_resources_without_optional_agent_claims(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    s.api.optional_agent_claims = False
    c = fake_entra.decode(fake_entra.app_token(s.agent, resource=s.api))
    assert not any(k.startswith("xms_") for k in c)
    assert "idtyp" not in c
    assert c["azp"] == s.agent.app_id


def test_t1_exchange_token(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    t1 = fake_entra.issue_token(
        tenant=s.tenant, resource="api://AzureADTokenExchange", client=s.blueprint, fmi_path=s.agent.app_id
    )
    c = _verify(fake_entra, t1, audience="api://AzureADTokenExchange", tenant=s.tenant.tenant_id)
    assert c["ver"] == "2.0"
    assert c["iss"] == f"{LOGIN}/{s.tenant.tenant_id}/v2.0"
    assert c["idtyp"] == "app"
    assert c["azp"] == c["appid"] == s.blueprint.app_id
    assert c["oid"] == s.blueprint.sp_object_id
    assert "fmi_path" not in c
    parts = c["sub"].split("/")
    assert parts[:5] == ["", "eid1", "c", "pub", "t"]
    assert uuid.UUID(bytes_le=_b64(parts[5])) == uuid.UUID(s.tenant.tenant_id)
    assert parts[6] == "a"
    assert uuid.UUID(bytes_le=_b64(parts[7])) == uuid.UUID(s.blueprint.app_id)
    assert parts[8] == s.agent.app_id
    assert "roles" not in c


def test_t2_exchange_token(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    t2 = fake_entra.app_token(s.agent, resource="api://AzureADTokenExchange/.default", version=1)
    c = fake_entra.decode(t2)
    assert c["aud"] == "api://AzureADTokenExchange"
    assert c["ver"] == "2.0"  # always v2
    assert c["azp"] == s.agent.app_id
    _agent_claims(c, s)


def test_extra_claims_and_unknown_resource(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    c = fake_entra.decode(
        fake_entra.app_token(s.client, resource=s.api, extra_claims={"tid": None, "custom": [1, 2], "ver": "9"})
    )
    assert "tid" not in c
    assert c["custom"] == [1, 2]
    assert c["ver"] == "9"
    assert fake_entra.decode(fake_entra.app_token(s.client, resource=f"api://{s.api.app_id}"))["aud"] == s.api.app_id
    with pytest.raises(ValueError, match="unknown resource"):
        fake_entra.app_token(s.client, resource="https://graph.microsoft.com")


def test_sign_arbitrary_claims(fake_entra: FakeEntra) -> None:
    token = fake_entra.sign({"hello": "world"}, header={"x5t": "abc"})
    assert jwt.get_unverified_header(token) == {
        "typ": "JWT",
        "alg": "RS256",
        "kid": fake_entra.current_kid,
        "x5t": "abc",
    }
    assert fake_entra.decode(token) == {"hello": "world"}


# -- mint_raw: attack tokens --------------------------------------------------------------------------------


def test_mint_raw_hs256_with_the_public_key(fake_entra: FakeEntra) -> None:
    token = fake_entra.mint_raw({"alg": "HS256", "kid": fake_entra.current_kid}, {"aud": "x"}, alg="HS256")
    head, body, sig = token.split(".")
    expected = hmac.new(fake_entra.signing_key().public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert _b64(sig) == expected
    explicit = fake_entra.mint_raw({"alg": "HS256"}, {"aud": "x"}, alg="HS256", key=b"s" * 32)
    assert jwt.decode(explicit, b"s" * 32, algorithms=["HS256"], audience="x") == {"aud": "x"}


def test_mint_raw_none_and_verbatim_parts(fake_entra: FakeEntra) -> None:
    token = fake_entra.mint_raw({"alg": "none"}, {"a": 1}, alg="none")
    assert token.endswith(".")
    raw = fake_entra.mint_raw(b'{"alg":"RS256","alg":"none"}', b'{"aud":"x","aud":"y"}', signature=b"\x00\x01")
    head, body, sig = raw.split(".")
    assert _b64(head) == b'{"alg":"RS256","alg":"none"}'
    assert _b64(body) == b'{"aud":"x","aud":"y"}'
    assert _b64(sig) == b"\x00\x01"


def test_mint_raw_rsa_and_pss(fake_entra: FakeEntra) -> None:
    kid = fake_entra.current_kid
    rs = fake_entra.mint_raw({"alg": "RS256", "kid": kid, "typ": "JWT"}, {"aud": "x"})
    assert fake_entra.decode(rs) == {"aud": "x"}
    public = fake_entra.signing_key().public_key
    ps = fake_entra.mint_raw({"alg": "PS256", "kid": kid}, {"aud": "x"}, alg="PS256")
    assert jwt.decode(ps, public, algorithms=["PS256"], audience="x") == {"aud": "x"}
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = fake_entra.mint_raw({"alg": "RS256", "kid": kid}, {"aud": "x"}, key=foreign)
    with pytest.raises(jwt.InvalidSignatureError):
        fake_entra.decode(forged)


def test_mint_raw_es256(fake_entra: FakeEntra) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = fake_entra.mint_raw({"alg": "ES256"}, {"aud": "x"}, alg="ES256", key=key)
    assert jwt.decode(token, key.public_key(), algorithms=["ES256"], audience="x") == {"aud": "x"}
    assert len(_b64(token.split(".")[2])) == 64
    generated = fake_entra.mint_raw({"alg": "ES256"}, {"aud": "x"}, alg="ES256")
    assert len(_b64(generated.split(".")[2])) == 64


def test_mint_raw_rejects_unknown_alg(fake_entra: FakeEntra) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        fake_entra.mint_raw({}, {}, alg="XX256", key=b"k")
    assert json.loads(_b64(fake_entra.mint_raw({"b": 1}, {}, alg="none").split(".")[0])) == {"b": 1}
