"""Attacks on inbound validation, as an attacker would try them: every case here must be refused cleanly (or,
where stated, accepted by design), through ``EntraAuth`` and both middlewares, without a stray exception, a hang
or a token in the logs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from entra_mw import EntraAuth, InsufficientScope, InvalidToken, Principal, Requirement
from entra_mw.asgi import EntraMiddleware
from entra_mw.testing import FakeClock, FakeEntra
from entra_mw.testing._keys import b64url, fresh_rsa_key
from entra_mw.wsgi import EntraWSGIMiddleware

from ..asgi._support import Result, drive, http_scope, recording_app
from ._support import MakeAuth, good_claims, reason

MSA_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"


def rewrite_jwks(fake: FakeEntra, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> httpx2.MockTransport:
    """A transport serving FakeEntra with its JWKS passed through ``edit`` (a tampered or unusual key set)."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        response = fake.handle(request)
        if "/keys" not in request.url.path:
            return response
        keys = json.loads(response.content)["keys"]
        return httpx2.Response(200, json={"keys": edit(keys)})

    return httpx2.MockTransport(handler)


def without_key_issuer(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in key.items() if k != "issuer"} for key in keys]


# -- algorithm confusion -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["rs256", "Rs256", "RS256 ", " RS256", "RS256\u0000", "RS\uff12\uff15\uff16"])
def test_alg_case_and_lookalike_variants_refused(fake_entra: FakeEntra, auth: EntraAuth, alg: str) -> None:
    token = fake_entra.mint_raw({"alg": alg, "kid": fake_entra.current_kid}, good_claims(fake_entra))
    assert reason(auth, token) == "bad_algorithm"


def test_hmac_with_every_public_form_of_the_key_refused(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    key = fake_entra.signing_key()
    numbers = key.public_key.public_numbers()
    secrets: list[bytes] = [
        key.public_pem(),
        json.dumps(key.jwk(None)).encode(),
        numbers.n.to_bytes(256, "big"),
        key.jwk(None)["n"].encode(),
    ]
    claims = good_claims(fake_entra)
    for secret in secrets:
        for alg in ("HS256", "HS384", "HS512"):
            token = fake_entra.mint_raw({"alg": alg, "kid": key.kid}, claims, alg=alg, key=secret)
            assert reason(auth, token) == "bad_algorithm"


def test_es256_even_with_a_valid_rs_kid_refused(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    auth = make_auth(algorithms=("RS256", "PS256"))
    token = fake_entra.mint_raw({"alg": "ES256", "kid": fake_entra.current_kid}, good_claims(fake_entra), alg="ES256")
    assert reason(auth, token) == "bad_algorithm"


@pytest.mark.parametrize("signature", [b"", b"\x00", b"\x00" * 255, b"\x00" * 257, b"\xff" * 256, b"\x01" * 4096])
def test_signatures_of_any_length_refused(fake_entra: FakeEntra, auth: EntraAuth, signature: bytes) -> None:
    token = fake_entra.mint_raw(
        {"alg": "RS256", "kid": fake_entra.current_kid}, good_claims(fake_entra), signature=signature
    )
    assert reason(auth, token) in ("bad_signature", "malformed")


# -- key injection and key selection ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
def test_key_carrying_headers_refused_even_when_null(fake_entra: FakeEntra, auth: EntraAuth, name: str) -> None:
    token = fake_entra.mint_raw({"alg": "RS256", "kid": fake_entra.current_kid, name: None}, good_claims(fake_entra))
    assert reason(auth, token) == "bad_header"


def test_another_apps_signing_key_is_never_used(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    # An app with its own signing key (claims mapping) gets its keys at ?appid= only; a token for *our* API
    # signed with another app's key must not validate, with or without our own ?appid=.
    s = fake_entra.quickstart()
    other = fake_entra.add_app(s.tenant, display_name="other", app_roles=("R",))
    foreign_kid = fake_entra.add_app_specific_key(other)
    token = fake_entra.app_token(s.client, resource=s.api, kid=foreign_kid)
    assert reason(make_auth(), token) == "unknown_kid"
    fake_entra.add_app_specific_key(s.api)
    assert reason(make_auth(extra_query_parameters={"appid": s.api.app_id}), token) == "unknown_kid"


def test_jwks_non_rsa_and_small_keys_are_skipped(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    # A JWKS that (also) lists an EC key, a 1024-bit RSA key and an encryption key under kids a token can name:
    # none of them can ever verify a token.
    small = fresh_rsa_key(1024)
    numbers = small.public_key().public_numbers()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    extra = [
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "small", "n": b64url(numbers.n.to_bytes(128, "big")), "e": "AQAB"},
        {**fake_entra.signing_key().jwk(None), "kid": "enc", "use": "enc"},
    ]
    auth = make_auth(transport=rewrite_jwks(fake_entra, lambda keys: extra + keys))
    claims = good_claims(fake_entra)
    assert reason(auth, fake_entra.mint_raw({"alg": "RS256", "kid": "small"}, claims, key=small)) == "unknown_kid"
    assert reason(auth, fake_entra.mint_raw({"alg": "RS256", "kid": "enc"}, claims)) == "unknown_kid"
    assert reason(auth, fake_entra.mint_raw({"alg": "ES256", "kid": "ec"}, claims, key=ec_key, alg="ES256")) == (
        "bad_algorithm"
    )
    auth.validate(fake_entra.mint_raw({"alg": "RS256", "kid": fake_entra.current_kid}, claims))


def test_duplicate_kid_in_jwks_first_wins(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    intruder = fresh_rsa_key()
    numbers = intruder.public_key().public_numbers()
    kid = fake_entra.current_kid
    twin = {"kty": "RSA", "use": "sig", "kid": kid, "n": b64url(numbers.n.to_bytes(256, "big")), "e": "AQAB"}
    auth = make_auth(transport=rewrite_jwks(fake_entra, lambda keys: [*keys, twin]))
    claims = good_claims(fake_entra)
    auth.validate(fake_entra.mint_raw({"alg": "RS256", "kid": kid}, claims))
    assert reason(auth, fake_entra.mint_raw({"alg": "RS256", "kid": kid}, claims, key=intruder)) == "bad_signature"


# -- lifetime ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exp", "expected"),
    [(True, "bad_claim"), (False, "bad_claim"), (2**63, "bad_claim"), (1e308, "bad_claim"), (-0.0, "expired")],
)
def test_exp_odd_values(fake_entra: FakeEntra, auth: EntraAuth, exp: Any, expected: str) -> None:
    assert reason(auth, fake_entra.sign({**good_claims(fake_entra), "exp": exp})) == expected


def test_float_exp_and_nbf_with_skew(fake_entra: FakeEntra, fake_clock: FakeClock, auth: EntraAuth) -> None:
    now = fake_clock.time()
    claims = good_claims(fake_entra)
    auth.validate(fake_entra.sign({**claims, "exp": now + 0.5}))
    assert reason(auth, fake_entra.sign({**claims, "exp": now - 300.0})) == "expired"
    auth.validate(fake_entra.sign({**claims, "nbf": now + 299.5}))
    assert reason(auth, fake_entra.sign({**claims, "nbf": now + 300.5})) == "not_yet_valid"
    assert reason(auth, fake_entra.sign({**claims, "nbf": now + 10**9})) == "not_yet_valid"


def test_cached_token_dies_at_exp_plus_skew(fake_entra: FakeEntra, fake_clock: FakeClock, make_auth: MakeAuth) -> None:
    auth = make_auth(validated_token_cache_ttl=3600.0)
    now = fake_clock.time()
    token = fake_entra.sign({**good_claims(fake_entra), "nbf": now, "exp": now + 60})
    first = auth.validate(token)
    fake_clock.advance(60 + 299)
    assert auth.validate(token) is first
    fake_clock.advance(1)
    assert reason(auth, token) == "expired"


# -- audience ---------------------------------------------------------------------------------------------


def test_audience_variants(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    app_id = s.api.app_id
    claims = good_claims(fake_entra)
    assert reason(auth, fake_entra.sign({**claims, "aud": ["someone-else", app_id]})) == "bad_claim"  # one string
    for aud in (app_id.upper(), f" {app_id}", f"{app_id}/", f"api://{app_id}", [], ["x", "y"], [f"api://{app_id}"]):
        assert reason(auth, fake_entra.sign({**claims, "aud": aud})) in ("bad_audience", "bad_claim"), aud
    v1 = {**claims, "ver": "1.0", "iss": f"https://sts.windows.net/{s.tenant.tenant_id}/"}
    auth.validate(fake_entra.sign({**v1, "aud": f"api://{app_id}"}))
    assert reason(auth, fake_entra.sign({**v1, "aud": app_id})) == "bad_audience"
    assert reason(auth, fake_entra.sign({**v1, "aud": f"API://{app_id}"})) == "bad_audience"


def test_v1_guid_audience_only_when_configured(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api, version=1, extra_claims={"aud": s.api.app_id})
    assert reason(make_auth(), token) == "bad_audience"
    make_auth(audiences=(s.api.app_id,)).validate(token)


# -- issuer and tenant ------------------------------------------------------------------------------------


def test_issuer_spelling_variants_refused(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    tid = fake_entra.quickstart().tenant.tenant_id
    claims = good_claims(fake_entra)
    for iss in (
        f"https://login.microsoftonline.com/{tid}/v2.0/",
        f"https://LOGIN.microsoftonline.com/{tid}/v2.0",
        f"http://login.microsoftonline.com/{tid}/v2.0",
        f"https://login.microsoftonline.com/{tid}/V2.0",
        f"https://login.microsoftonline.com/{tid}/v2.0 ",
        f"https://login.microsoftonline.com//{tid}/v2.0",
        f"https://sts.windows.net/{tid}",
        f"https://sts.windows.net/{tid}//",
        f"https://login.microsoftonline.com/{tid}/v2.0?{tid}",
    ):
        assert reason(auth, fake_entra.sign({**claims, "iss": iss})) == "bad_issuer", iss
    # tid spelled differently from the issuer: IDX40004
    upper = fake_entra.sign({**claims, "iss": f"https://login.microsoftonline.com/{tid.upper()}/v2.0"})
    assert reason(auth, upper) == "tid_mismatch"


@pytest.mark.parametrize("version", [1, 2])
def test_other_tenant_refused_single_tenant_even_without_key_issuer(
    fake_entra: FakeEntra, make_auth: MakeAuth, version: int
) -> None:
    s = fake_entra.quickstart()
    other = fake_entra.add_tenant()
    token = fake_entra.app_token(s.client, resource=s.api, tenant=other, version=version)
    assert reason(make_auth(), token) == "bad_issuer"
    assert reason(make_auth(transport=rewrite_jwks(fake_entra, without_key_issuer)), token) == "bad_issuer"


def test_issuer_template_widens_a_single_tenant_app(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    # By design (spec §4.2): a ``valid_issuers`` template with {tenantid} matches every tenant. Only the key's
    # own issuer property (spec §4.4) then stands in the way; keys without one accept the other tenant. The
    # documentation says so; this test pins the behaviour.
    s = fake_entra.quickstart()
    other = fake_entra.add_tenant()
    template = ("https://login.microsoftonline.com/{tenantid}/v2.0",)
    token = fake_entra.app_token(s.client, resource=s.api, tenant=other)
    assert reason(make_auth(valid_issuers=template), token) == "key_issuer_mismatch"
    widened = make_auth(valid_issuers=template, transport=rewrite_jwks(fake_entra, without_key_issuer))
    assert widened.validate(token).tid == other.tenant_id
    closed = make_auth(
        valid_issuers=template,
        allowed_tenants=(s.tenant.tenant_id,),
        transport=rewrite_jwks(fake_entra, without_key_issuer),
    )
    assert reason(closed, token) == "tenant_not_allowed"


@pytest.mark.parametrize("meta", ["common", "organizations"])
def test_multi_tenant_tid_and_issuer_must_agree(fake_entra: FakeEntra, make_auth: MakeAuth, meta: str) -> None:
    s = fake_entra.quickstart()
    other = fake_entra.add_tenant()
    auth = make_auth(tenant_id=meta, allowed_tenants=(s.tenant.tenant_id,))
    foreign = fake_entra.decode(fake_entra.app_token(s.client, resource=s.api, tenant=other))
    # Another tenant's issuer with the allowed tenant's tid, and the other way round.
    assert reason(auth, fake_entra.sign({**foreign, "tid": s.tenant.tenant_id})) == "tid_mismatch"
    own = good_claims(fake_entra)
    assert reason(auth, fake_entra.sign({**own, "tid": other.tenant_id})) == "tid_mismatch"
    for version in (1, 2):
        token = fake_entra.app_token(s.client, resource=s.api, tenant=other, version=version)
        assert reason(auth, token) == "tenant_not_allowed"
        auth.validate(fake_entra.app_token(s.client, resource=s.api, version=version))


def test_organizations_without_allow_list_accepts_any_tenant(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    # allowed_tenants=None with common/organizations accepts ANY tenant, including the personal-account
    # tenant's tokens if Entra issues them for this app: the documentation says so loudly.
    auth = make_auth(tenant_id="organizations")
    claims = good_claims(fake_entra)
    msa = {**claims, "tid": MSA_TENANT, "iss": f"https://login.microsoftonline.com/{MSA_TENANT}/v2.0"}
    assert auth.validate(fake_entra.sign(msa)).tid == MSA_TENANT
    limited = make_auth(tenant_id="organizations", allowed_tenants=(claims["tid"],))
    assert reason(limited, fake_entra.sign(msa)) == "tenant_not_allowed"


def test_requirement_tenants_is_403(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    other = fake_entra.add_tenant()
    principal = make_auth(tenant_id="common").validate(fake_entra.app_token(s.client, resource=s.api, tenant=other))
    with pytest.raises(InsufficientScope) as info:
        Requirement(tenants=[s.tenant.tenant_id.upper()]).check(principal)
    assert info.value.status_code == 403
    assert info.value.reason == "tenant_not_allowed"


# -- IDW10201: a token must grant something ---------------------------------------------------------------


@pytest.mark.parametrize(
    "grants",
    [
        {"roles": []},
        {"roles": [""]},
        {"roles": None},
        {"scp": ""},
        {"scp": "   "},
        {"scp": None},
        {"roles": [], "scp": ""},
        {"http://schemas.microsoft.com/identity/claims/scope": None},
        {"http://schemas.microsoft.com/ws/2008/06/identity/claims/role": []},
    ],
)
def test_empty_scope_or_roles_grant_nothing(fake_entra: FakeEntra, make_auth: MakeAuth, grants: dict[str, Any]) -> None:
    claims = {k: v for k, v in good_claims(fake_entra).items() if k not in ("roles", "scp")}
    token = fake_entra.sign({**claims, **grants})
    assert reason(make_auth(), token) == "no_scope_or_roles"
    make_auth(allow_acl_authorization=True).validate(token)


@pytest.mark.parametrize(
    "grants",
    [
        {"roles": ["Weather.Read.All"]},
        {"roles": ["", "R"]},
        {"scp": "Weather.Read"},
        {"scp": "/"},
        {"http://schemas.microsoft.com/identity/claims/scope": "Weather.Read"},
        {"http://schemas.microsoft.com/ws/2008/06/identity/claims/role": ["R"]},
    ],
)
def test_non_empty_scope_or_roles_grant(fake_entra: FakeEntra, auth: EntraAuth, grants: dict[str, Any]) -> None:
    claims = {k: v for k, v in good_claims(fake_entra).items() if k not in ("roles", "scp")}
    auth.validate(fake_entra.sign({**claims, **grants}))


# -- shape and size ---------------------------------------------------------------------------------------


def _token_of_length(fake: FakeEntra, length: int) -> str:
    claims = good_claims(fake)
    pad = length
    for _ in range(20):
        token = fake.sign({**claims, "pad": "x" * pad})
        if len(token) == length:
            return token
        pad += (length - len(token)) * 3 // 4 or (1 if len(token) < length else -1)
    raise AssertionError("could not hit the length")


def test_size_limit_boundary(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    auth = make_auth(max_token_bytes=4096)
    exact = _token_of_length(fake_entra, 4096)
    auth.validate(exact)
    # The size cap is checked before anything else: one more character is enough.
    assert reason(auth, exact + "A") == "too_large"
    assert reason(make_auth(), "a" * (16 * 1024 + 1)) == "too_large"


@pytest.mark.parametrize("swap", [("e", "\u0435"), ("a", "\uff41"), (".", "\u2024"), ("-", "\u2010")])
def test_unicode_lookalikes_refused(fake_entra: FakeEntra, auth: EntraAuth, swap: tuple[str, str]) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)
    # Swap the first occurrence; a token that happens not to hold the character gets the look-alike mid-payload.
    at = token.find(swap[0])
    at = at if at >= 0 else token.index(".") + 5
    assert reason(auth, token[:at] + swap[1] + token[at + 1 :]) == "malformed"


def test_odd_python_inputs(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)

    class Sub(str):
        pass

    assert auth.validate(Sub(token)).tid == s.tenant.tenant_id
    for value in (None, 12, 1.5, [token], {"t": token}, token + "\x00", "\x00" + token, token[:-1] + "\ud800"):
        assert reason(auth, value) == "malformed"


def test_principal_hash_survives_odd_claims() -> None:
    principal = Principal({"oid": "o", "tid": "t", "sub": "s", "uti": ["not", "a", "string"]})
    assert isinstance(hash(principal), int)


# -- the middlewares: odd headers and queries -------------------------------------------------------------

_HEADER_CASES: list[tuple[bytes, set[int]]] = [
    (b"Bearer\t{t}", {401}),
    (b"Bearer {t}\x00", {400}),
    (b"Bearer \x00{t}", {400}),
    (b"Bearer {t}\xe9", {400}),
    (b"Bearer \xc3\xa9{t}", {400}),
    (b"Bearer {t}=", {401}),
    (b"Bearer {t}, Bearer {t}", {400}),
    (b"Bearer {t}, Basic YTpi", {400}),
    (b"Bearer " + b"a" * (16 * 1024 + 1), {401}),
    (b"\xff\xfe\xfd", {401}),
    (b"Bearer", {400}),
    (b"Bearer \t", {400}),
]


def _header(template: bytes, token: str) -> bytes:
    return template.replace(b"{t}", token.encode())


def test_asgi_odd_authorization_headers(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)
    for template, statuses in _HEADER_CASES:
        seen = Result()
        mw = EntraMiddleware(recording_app(seen), auth=auth)
        out = asyncio.run(drive(mw, http_scope(headers=[(b"authorization", _header(template, token))]), Result()))
        assert out.status in statuses, template
        assert seen.scope is None
        assert token.encode() not in out.body
        assert all(token.encode() not in value for _, value in out.headers)


def test_wsgi_odd_authorization_headers(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)
    reached: list[bool] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        reached.append(True)
        start_response("200 OK", [])
        return [b"ok"]

    mw = EntraWSGIMiddleware(app, auth=auth)
    for template, statuses in _HEADER_CASES:
        got: list[str] = []
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            # PEP 3333: header values are latin-1 decoded bytes.
            "HTTP_AUTHORIZATION": _header(template, token).decode("latin-1"),
        }
        body = b"".join(mw(environ, lambda status, headers, *_: got.append(status)))
        assert int(got[0].split()[0]) in statuses, template
        assert token.encode() not in body
    assert not reached
    # A str that latin-1 cannot carry (a non-conforming server) is refused as well.
    got = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_AUTHORIZATION": f"Bearer {token}\u20ac"}
    list(mw(environ, lambda status, headers, *_: got.append(status)))
    assert got[0].startswith("400")


@pytest.mark.parametrize(
    "query", [b"access_token=x", b"a=1&access%5Ftoken=x", b"%61ccess_token=1", b"access_token", b"x=%ZZ&access_token=1"]
)
def test_access_token_in_query_refused_by_both(fake_entra: FakeEntra, auth: EntraAuth, query: bytes) -> None:
    s = fake_entra.quickstart()
    token = fake_entra.app_token(s.client, resource=s.api)
    for headers in ([], [(b"authorization", b"Bearer " + token.encode())]):
        mw = EntraMiddleware(recording_app(Result()), auth=auth)
        out = asyncio.run(drive(mw, http_scope(headers=headers, query=query), Result()))
        assert out.status == 400
    got: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise AssertionError("must not be reached")

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": query.decode(), "HTTP_AUTHORIZATION": ""}
    list(EntraWSGIMiddleware(app, auth=auth)(environ, lambda status, headers, *_: got.append(status)))
    assert got[0].startswith("400")


# -- logging ----------------------------------------------------------------------------------------------


def test_refusals_log_no_token(fake_entra: FakeEntra, auth: EntraAuth, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="entra_mw")
    s = fake_entra.quickstart()
    good = fake_entra.app_token(s.client, resource=s.api)
    claims = fake_entra.decode(good)
    bad = [
        fake_entra.mint_raw({"alg": "HS256", "kid": fake_entra.current_kid}, claims, alg="HS256"),
        fake_entra.mint_raw({"alg": "RS256", "kid": "k", "jku": "https://evil.example/"}, claims),
        fake_entra.sign({**claims, "roles": []}),
        fake_entra.sign({**claims, "iss": good, "tid": good[:36]}),
        fake_entra.sign({**claims, "aud": [good, "x"]}),
        good.replace("e", "\u0435", 1),
    ]
    for token in bad:
        with pytest.raises(InvalidToken):
            auth.validate(token)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "token rejected" in text
    for token in [good, *bad]:
        for piece in token.split("."):
            if len(piece) >= 16:
                assert piece not in text
                assert piece[:24] not in text
