"""Token validation against FakeEntra: every rule of spec §4 and DESIGN §5, through ``EntraAuth``."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import jwt
import pytest

from entra_mw import EntraAuth, InvalidToken, ProviderUnavailable
from entra_mw.testing import FakeClock, FakeEntra
from entra_mw.testing._keys import b64url, fresh_rsa_key

from ._support import MakeAuth, good_claims, reason


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def validate_in_threads(auth: EntraAuth, tokens: list[str]) -> None:
    """Validates each token in its own thread, all released at once; every one must pass."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(tokens))

    def run(token: str) -> None:
        barrier.wait()
        try:
            auth.validate(token)
        except BaseException as exc:  # reported by the assertion below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert not errors


# -- the happy paths -------------------------------------------------------------------------------------


def test_app_token_v2(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    principal = auth.validate(fake_entra.app_token(s.client, resource=s.api))
    assert principal.is_app
    assert principal.roles == frozenset({"Weather.Read.All"})
    assert principal.tid == s.tenant.tenant_id
    assert principal.client_id == s.client.app_id


def test_user_token_v2(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    principal = auth.validate(fake_entra.user_token(s.user, client=s.client, resource=s.api))
    assert not principal.is_app
    assert "Weather.Read" in principal.scopes
    assert principal.oid == s.user.object_id


@pytest.mark.anyio
async def test_avalidate(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    principal = await auth.avalidate(fake_entra.user_token(s.user, client=s.client, resource=s.api))
    assert principal.token_version == "2.0"
    with pytest.raises(InvalidToken):
        await auth.avalidate("not-a-token")


def test_v1_token_audience_is_app_id_uri(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api, version=1)
    assert fake_entra.decode(token)["aud"] == f"api://{s.api.app_id}"
    principal = auth.validate(token)
    assert principal.token_version == "1.0"
    assert principal.client_id == s.client.app_id


def test_v1_token_with_client_id_audience_is_refused(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api, version=1, extra_claims={"aud": s.api.app_id})
    assert reason(auth, token) == "bad_audience"


def test_v2_token_with_app_id_uri_audience_is_refused(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api, extra_claims={"aud": f"api://{s.api.app_id}"})
    assert reason(auth, token) == "bad_audience"


def test_configured_audiences(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(audiences=("api://weather",))
    for version in (1, 2):
        token = fake_entra.app_token(s.client, resource=s.api, version=version, extra_claims={"aud": "api://weather"})
        assert auth.validate(token).token_version == f"{version}.0"
    listed = fake_entra.app_token(s.client, resource=s.api, extra_claims={"aud": ["api://weather"]})
    assert reason(auth, listed) == "bad_claim"  # a list is refused even when it holds only an accepted audience


def test_wrong_audience(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, extra_claims={"aud": "someone-else"})) == (
        "bad_audience"
    )
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, extra_claims={"aud": None})) == "bad_audience"
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, extra_claims={"aud": ["x", "y"]})) == (
        "bad_claim"
    )


def test_token_for_another_resource(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    other = fake_entra.add_app(s.tenant, display_name="other-api", app_roles=("R",))
    fake_entra.grant_app_roles(s.client, other, ["R"])
    assert reason(auth, fake_entra.app_token(s.client, resource=other)) == "bad_audience"


@pytest.mark.parametrize("ver", [None, "3.0", "2"])
def test_missing_or_unknown_version(fake_entra: FakeEntra, auth: EntraAuth, ver: str | None) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api, extra_claims={"ver": ver})
    assert reason(auth, token) == "bad_version"


def test_domain_tenant_takes_guid_from_metadata(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(tenant_id=s.tenant.domain)
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    auth.validate(fake_entra.app_token(s.client, resource=s.api, version=1))
    other = fake_entra.add_tenant()
    foreign = fake_entra.app_token(s.client, resource=s.api, tenant=other)
    assert reason(auth, foreign) == "bad_issuer"


# -- issuer and tenant -----------------------------------------------------------------------------------


def test_wrong_issuer(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    tid = s.tenant.tenant_id
    for iss in (
        f"https://evil.example/{tid}/v2.0",
        f"https://login.microsoftonline.com/{tid}/v2.0/x",
        f"https://sts.windows.net/{tid}",
    ):
        token = fake_entra.app_token(s.client, resource=s.api, extra_claims={"iss": iss})
        assert reason(auth, token) == "bad_issuer", iss
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, extra_claims={"iss": None})) == "bad_issuer"


def test_tid_must_appear_in_issuer(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    other = fake_entra.add_tenant()
    token = fake_entra.app_token(
        s.client, resource=s.api, extra_claims={"iss": f"https://login.microsoftonline.com/{other.tenant_id}/v2.0"}
    )
    assert reason(auth, token) == "tid_mismatch"
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, extra_claims={"tid": None})) == "no_tenant"


def test_other_tenant_refused_by_tenant_specific_authority(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    other = fake_entra.add_tenant()
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, tenant=other)) == "bad_issuer"
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, tenant=other, version=1)) == "bad_issuer"


@pytest.mark.parametrize("meta_tenant", ["common", "organizations"])
def test_multi_tenant_any_tenant(fake_entra: FakeEntra, make_auth: MakeAuth, meta_tenant: str) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(tenant_id=meta_tenant)
    other = fake_entra.add_tenant()
    for tenant in (s.tenant, other):
        for version in (1, 2):
            principal = auth.validate(fake_entra.app_token(s.client, resource=s.api, tenant=tenant, version=version))
            assert principal.tid == tenant.tenant_id


def test_multi_tenant_allow_list(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(tenant_id="organizations", allowed_tenants=(s.tenant.tenant_id.upper(),))
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    other = fake_entra.add_tenant()
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, tenant=other)) == "tenant_not_allowed"


def test_multi_tenant_still_checks_issuer_shape(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(tenant_id="common")
    tid = s.tenant.tenant_id
    token = fake_entra.app_token(s.client, resource=s.api, extra_claims={"iss": f"https://evil.example/{tid}/v2.0"})
    assert reason(auth, token) == "bad_issuer"


def test_valid_issuers_templates(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    custom = "https://issuer.contoso.example/{tenantid}/"
    auth = make_auth(valid_issuers=(custom,))
    token = fake_entra.app_token(
        s.client, resource=s.api, extra_claims={"iss": custom.replace("{tenantid}", s.tenant.tenant_id)}
    )
    auth.validate(token)
    auth.validate(fake_entra.app_token(s.client, resource=s.api))  # the authority's own issuer still counts


def test_key_issuer_property_enforced(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    # The tenant's JWKS keys carry issuer https://login.microsoftonline.com/{tid}/v2.0 (spec §4.4): even when a
    # configured issuer template accepts another tenant, that tenant's tokens cannot be signed by these keys.
    s = fake_entra.quickstart()
    auth = make_auth(valid_issuers=("https://login.microsoftonline.com/{tenantid}/v2.0",))
    other = fake_entra.add_tenant()
    token = fake_entra.app_token(s.client, resource=s.api, tenant=other)
    assert reason(auth, token) == "key_issuer_mismatch"
    # A v1 token of the configured tenant passes against the v2 keys (through the metadata issuer).
    auth.validate(fake_entra.app_token(s.client, resource=s.api, version=1))


# -- lifetime --------------------------------------------------------------------------------------------


def test_expiry_with_clock_skew(fake_entra: FakeEntra, fake_clock: FakeClock, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(validated_token_cache_ttl=1.0)
    token = fake_entra.app_token(s.client, resource=s.api, lifetime=3600)
    fake_clock.advance(3600 + 299)
    auth.validate(token)
    fake_clock.advance(2)
    assert reason(auth, token) == "expired"


def test_zero_skew(fake_entra: FakeEntra, fake_clock: FakeClock, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(clock_skew=0)
    token = fake_entra.app_token(s.client, resource=s.api, lifetime=3600)
    fake_clock.advance(3600)
    assert reason(auth, token) == "expired"


def test_not_before(fake_entra: FakeEntra, fake_clock: FakeClock, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    now = int(fake_clock.time())
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, extra_claims={"nbf": now + 400})) == (
        "not_yet_valid"
    )
    auth.validate(fake_entra.app_token(s.client, resource=s.api, extra_claims={"nbf": now + 200}))


def test_expiry_required(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api, extra_claims={"exp": None})) == "no_expiry"


@pytest.mark.parametrize("value", [True, "1800000000", 1e400, -1, 10**20, [1]])
def test_time_claims_must_be_numbers(fake_entra: FakeEntra, auth: EntraAuth, value: Any) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api, extra_claims={"exp": value})
    assert reason(auth, token) in ("bad_claim", "malformed")


# -- scopes and roles ------------------------------------------------------------------------------------


def test_token_without_scope_or_roles(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api, extra_claims={"roles": None, "scp": None})
    assert reason(make_auth(), token) == "no_scope_or_roles"
    principal = make_auth(allow_acl_authorization=True).validate(token)
    assert principal.roles == frozenset()


def test_agent_token_with_slash_scope_is_accepted(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api, extra_claims={"roles": None, "scp": "/"})
    auth.validate(token)


# -- algorithms and headers ------------------------------------------------------------------------------


def test_alg_confusion_hs256_with_public_key(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    forged = fake_entra.mint_raw(
        {"alg": "HS256", "typ": "JWT", "kid": fake_entra.current_kid}, good_claims(fake_entra), alg="HS256"
    )
    assert reason(auth, forged) == "bad_algorithm"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS256", "HS512", "ES256", "PS256", "RS1", ""])
def test_refused_algorithms(fake_entra: FakeEntra, auth: EntraAuth, alg: str) -> None:
    sign_alg = alg if alg in ("HS256", "HS512", "ES256", "PS256") else "none"
    token = fake_entra.mint_raw({"alg": alg, "kid": fake_entra.current_kid}, good_claims(fake_entra), alg=sign_alg)
    assert reason(auth, token) == "bad_algorithm"


def test_ps256_when_allowed(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    auth = make_auth(algorithms=("RS256", "PS256"))
    token = fake_entra.mint_raw({"alg": "PS256", "kid": fake_entra.current_kid}, good_claims(fake_entra), alg="PS256")
    auth.validate(token)
    # A PKCS#1 v1.5 signature labelled PS256 does not verify.
    mislabelled = fake_entra.mint_raw({"alg": "PS256", "kid": fake_entra.current_kid}, good_claims(fake_entra))
    assert reason(auth, mislabelled) == "bad_signature"


@pytest.mark.parametrize(
    "extra",
    [
        {"jku": "https://evil.example/keys"},
        {"x5u": "https://evil.example/cert"},
        {"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}},
        {"x5c": ["MIIB"]},
        {"crit": ["exp"]},
        {"crit": []},
        {"b64": False},
    ],
)
def test_key_carrying_headers_refused(fake_entra: FakeEntra, auth: EntraAuth, extra: dict[str, Any]) -> None:
    header = {"alg": "RS256", "typ": "JWT", "kid": fake_entra.current_kid, **extra}
    assert reason(auth, fake_entra.mint_raw(header, good_claims(fake_entra))) == "bad_header"


def test_embedded_jwk_is_never_trusted(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    attacker = fresh_rsa_key()
    numbers = attacker.public_key().public_numbers()
    jwk = {"kty": "RSA", "n": b64url(numbers.n.to_bytes(256, "big")), "e": "AQAB", "kid": "attacker"}
    token = fake_entra.mint_raw({"alg": "RS256", "kid": "attacker", "jwk": jwk}, good_claims(fake_entra), key=attacker)
    assert reason(auth, token) == "bad_header"
    unsigned = fake_entra.mint_raw(
        {"alg": "RS256", "kid": fake_entra.current_kid}, good_claims(fake_entra), key=attacker
    )
    assert reason(auth, unsigned) == "bad_signature"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256"},
        {"alg": "RS256", "kid": ""},
        {"alg": "RS256", "kid": 7},
        {"alg": "RS256", "kid": "k\n"},
        {"alg": "RS256", "kid": "k" * 300},
    ],
)
def test_kid_required(fake_entra: FakeEntra, auth: EntraAuth, header: dict[str, Any]) -> None:
    assert reason(auth, fake_entra.mint_raw(header, good_claims(fake_entra))) == "bad_header"


def test_typ_checked(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    for typ, ok in (("JWT", True), ("at+jwt", True), ("JWE", False), (1, False)):
        token = fake_entra.mint_raw(
            {"alg": "RS256", "kid": fake_entra.current_kid, "typ": typ}, good_claims(fake_entra)
        )
        if ok:
            auth.validate(token)
        else:
            assert reason(auth, token) == "bad_header"


def test_jwe_refused(auth: EntraAuth) -> None:
    jwe = ".".join([b64url(b'{"alg":"RSA-OAEP","enc":"A256GCM"}'), "a", "b", "c", "d"])
    assert reason(auth, jwe) == "jwe"


def test_tampered_payload(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    head, _, sig = fake_entra.app_token(s.client, resource=s.api).split(".")
    claims = good_claims(fake_entra)
    claims["roles"] = ["Admin"]
    assert reason(auth, f"{head}.{b64url(json.dumps(claims).encode())}.{sig}") == "bad_signature"


def test_duplicate_claims_refused(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    claims = good_claims(fake_entra)
    body = json.dumps(claims)[:-1] + ', "aud": "' + s.api.app_id + '"}'
    token = fake_entra.mint_raw({"alg": "RS256", "kid": fake_entra.current_kid}, body.encode())
    assert reason(auth, token) == "malformed"


def test_non_canonical_base64url(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)
    head, payload, sig = token.split(".")
    assert len(sig) % 4 == 2  # 256 bytes: the last character carries 4 padding bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(sig[-1]) + 1]
    assert reason(auth, f"{head}.{payload}.{sig[:-1]}{twin}") == "malformed"
    assert reason(auth, f"{head}.{payload}.{sig}==") == "malformed"
    assert reason(auth, f"{head}.{payload}.{sig.replace('-', '+').replace('_', '/')}") in ("malformed", "bad_signature")
    assert reason(auth, f"{head}.{payload}.{sig[:-1]}") == "malformed"  # length ≡ 1 (mod 4)
    auth.validate(token)


def test_huge_token(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(max_token_bytes=4096)
    token = fake_entra.app_token(s.client, resource=s.api, extra_claims={"pad": "x" * 5000})
    assert reason(auth, token) == "too_large"
    assert reason(auth, "a" * 10_000_000) == "too_large"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "a..c", "ä.b.c", " a.b.c", "a.b.c ", "Bearer x.y.z"])
def test_malformed_shapes(auth: EntraAuth, token: str) -> None:
    assert reason(auth, token) == "malformed"


# -- keys: rotation, outages, app-specific keys ----------------------------------------------------------


def test_key_rotation_refresh_and_cooldown(fake_entra: FakeEntra, fake_clock: FakeClock, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    assert fake_entra.request_count("jwks") == 1
    fake_entra.rotate_keys()
    auth.validate(fake_entra.app_token(s.client, resource=s.api))  # unknown kid: one refresh
    assert fake_entra.request_count("jwks") == 2
    fake_entra.rotate_keys()
    token = fake_entra.app_token(s.client, resource=s.api)
    assert reason(auth, token) == "unknown_kid"  # within the cooldown: no refresh
    assert reason(auth, token) == "unknown_kid"
    assert fake_entra.request_count("jwks") == 2
    fake_clock.advance(300)
    auth.validate(token)
    assert fake_entra.request_count("jwks") == 3


def test_unknown_kids_do_not_amplify_requests(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    for i in range(50):
        token = fake_entra.mint_raw({"alg": "RS256", "kid": f"random-{i}"}, good_claims(fake_entra))
        assert reason(auth, token) == "unknown_kid"
    assert fake_entra.request_count("jwks") <= 2


def test_periodic_refresh(fake_entra: FakeEntra, fake_clock: FakeClock, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    fake_clock.advance(11 * 3600)
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    assert fake_entra.request_count("jwks") == 1
    fake_clock.advance(3600)
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    assert fake_entra.request_count("jwks") == 2


def test_outage_with_cached_keys_keeps_working(fake_entra: FakeEntra, fake_clock: FakeClock, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    fake_entra.faults.outage("jwks")
    fake_clock.advance(13 * 3600)
    auth.validate(fake_entra.app_token(s.client, resource=s.api))  # refresh fails: last-known-good keys
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    assert fake_entra.request_count("jwks") == 2  # no retry within the cooldown
    fake_entra.faults.clear()
    fake_entra.faults.garbage("jwks")
    fake_clock.advance(300)
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    assert fake_entra.request_count("jwks") == 3


def test_outage_with_no_keys_is_503(fake_entra: FakeEntra, fake_clock: FakeClock, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)
    fake_entra.faults.outage("jwks")
    with pytest.raises(ProviderUnavailable) as info:
        auth.validate(token)
    assert info.value.status_code == 503
    fake_entra.faults.clear()
    with pytest.raises(ProviderUnavailable):
        auth.validate(token)  # a short back-off before the next attempt
    fake_clock.advance(1)
    auth.validate(token)


@pytest.mark.parametrize("endpoint", ["openid_configuration", "jwks"])
@pytest.mark.parametrize("fault", ["outage", "garbage", "server_error", "empty"])
def test_provider_faults_without_keys(fake_entra: FakeEntra, auth: EntraAuth, endpoint: str, fault: str) -> None:
    s = fake_entra.quickstart()
    if fault == "empty":
        fake_entra.faults.set(endpoint, status=200, body=b'{"keys": []}')
    else:
        getattr(fake_entra.faults, fault)(endpoint)
    with pytest.raises(ProviderUnavailable):
        auth.validate(fake_entra.app_token(s.client, resource=s.api))
    with pytest.raises(ProviderUnavailable):
        auth.startup()


def test_garbage_jwks_during_rotation_keeps_old_keys(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    old = fake_entra.app_token(s.client, resource=s.api)
    auth.validate(old)
    fake_entra.rotate_keys()
    fake_entra.faults.garbage("jwks", body=b'{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}')
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api)) == "unknown_kid"
    auth.validate(fake_entra.app_token(s.client, resource=s.api, kid=jwt.get_unverified_header(old)["kid"]))


def test_app_specific_keys(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    fake_entra.add_app_specific_key(s.api)
    token = fake_entra.app_token(s.client, resource=s.api)
    assert reason(make_auth(), token) == "unknown_kid"
    auth = make_auth(extra_query_parameters={"appid": s.api.app_id})
    auth.validate(token)


# -- the validated-token cache ---------------------------------------------------------------------------


def test_cache_hit_returns_same_principal(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)
    first = auth.validate(token)
    assert auth.validate(token) is first
    assert fake_entra.request_count("jwks") == 1


def test_cache_hit_rechecks_expiry(fake_entra: FakeEntra, fake_clock: FakeClock, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(validated_token_cache_ttl=10 * 3600.0)
    token = fake_entra.app_token(s.client, resource=s.api, lifetime=600)
    first = auth.validate(token)
    fake_clock.advance(600 + 299)
    assert auth.validate(token) is first
    fake_clock.advance(1)
    assert reason(auth, token) == "expired"


def test_cache_entries_die_with_their_key(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)
    auth.validate(token)
    fake_entra.rotate_keys(keep_old=False)
    auth.startup()  # an explicit refresh: the old kid is gone
    assert reason(auth, token) == "unknown_kid"
    auth.validate(fake_entra.app_token(s.client, resource=s.api))


def test_cache_is_bounded(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(validated_token_cache_size=3)
    tokens = [fake_entra.app_token(s.client, resource=s.api) for _ in range(10)]
    principals = [auth.validate(t) for t in tokens]
    # The newest stay cached (same object), and every token still validates.
    assert auth.validate(tokens[-1]) is principals[-1]
    for t in tokens:
        auth.validate(t)


def test_cache_does_not_confuse_tokens(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    good = fake_entra.app_token(s.client, resource=s.api)
    auth.validate(good)
    head, payload, sig = good.split(".")
    assert reason(auth, f"{head}.{payload}.{sig[:-2]}AA") in ("bad_signature", "malformed")


# -- single flight ---------------------------------------------------------------------------------------


def test_single_flight_threads_initial_load(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    fake_entra.faults.latency("jwks", 0.05)
    validate_in_threads(auth, [fake_entra.app_token(s.client, resource=s.api) for _ in range(16)])
    assert fake_entra.request_count("jwks") == 1


def test_single_flight_threads_unknown_kid(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    fake_entra.rotate_keys()
    fake_entra.faults.latency("jwks", 0.05)
    validate_in_threads(auth, [fake_entra.app_token(s.client, resource=s.api) for _ in range(16)])
    assert fake_entra.request_count("jwks") == 2


@pytest.mark.anyio
async def test_single_flight_tasks(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    fake_entra.faults.latency("jwks", 0.02)
    tokens = [fake_entra.app_token(s.client, resource=s.api) for _ in range(20)]
    async with anyio.create_task_group() as tg:
        for token in tokens:
            tg.start_soon(auth.avalidate, token)
    assert fake_entra.request_count("jwks") == 1
    fake_entra.rotate_keys()
    rotated = [fake_entra.app_token(s.client, resource=s.api) for _ in range(20)]
    async with anyio.create_task_group() as tg:
        for token in rotated:
            tg.start_soon(auth.avalidate, token)
    assert fake_entra.request_count("jwks") == 2


@pytest.mark.anyio
async def test_single_flight_sync_and_async_together(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    fake_entra.faults.latency("jwks", 0.05)
    tokens = [fake_entra.app_token(s.client, resource=s.api) for _ in range(12)]
    async with anyio.create_task_group() as tg:
        for i, token in enumerate(tokens):
            if i % 2:
                tg.start_soon(auth.avalidate, token)
            else:
                tg.start_soon(anyio.to_thread.run_sync, auth.validate, token)
    assert fake_entra.request_count("jwks") == 1


@pytest.mark.anyio
async def test_async_outage_and_refresh(fake_entra: FakeEntra, fake_clock: FakeClock, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    fake_entra.faults.outage("openid_configuration", times=1)
    with pytest.raises(ProviderUnavailable):
        await auth.astartup()
    fake_clock.advance(1)
    await auth.astartup()
    await auth.avalidate(fake_entra.app_token(s.client, resource=s.api))
    assert fake_entra.request_count("jwks") == 1


def test_errors_render(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    with pytest.raises(InvalidToken) as info:
        auth.validate("x.y.z")
    challenge = info.value.www_authenticate or ""
    assert challenge.startswith('Bearer error="invalid_token"')
    assert "x.y.z" not in challenge
