"""Where keys may come from and the stricter token policy: metadata URLs pinned to the instance's cloud, tenants
that are GUIDs, one algorithm per key, exponent 65537, plain http only by opt-in on loopback, a missing CA file
or a failed certificate answered 503 and logged as such, and the token shapes Entra never issues (aud lists,
``cty``, future ``iat``, case-variant claim names, lone surrogates)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from entra_mw import ConfigurationError, EntraAuth, EntraConfig, ProviderUnavailable, _jwks
from entra_mw.testing import FakeClock, FakeEntra
from entra_mw.testing._keys import b64url

from ._support import MakeAuth, good_claims, reason

PUBLIC = "https://login.microsoftonline.com/"
CLIENT = "11111111-2222-3333-4444-555555555555"


def unavailable(auth: EntraAuth, token: str) -> ProviderUnavailable:
    with pytest.raises(ProviderUnavailable) as info:
        auth.validate(token)
    assert info.value.status_code == 503
    return info.value


def metadata(fake: FakeEntra, tenant_id: str, **changes: Any) -> str:
    """FakeEntra's own v2 metadata for ``tenant_id`` with ``changes`` applied, as a body to serve instead."""
    with httpx2.Client(transport=fake.transport) as client:
        doc = client.get(f"{PUBLIC}{tenant_id}/v2.0/.well-known/openid-configuration").json()
    return json.dumps({**doc, **changes})


def jwks_with(fake: FakeEntra, tenant_id: str, *extra: dict[str, Any], **changes: Any) -> str:
    """FakeEntra's JWKS for ``tenant_id`` with ``changes`` applied to every key, plus ``extra`` keys."""
    with httpx2.Client(transport=fake.transport) as client:
        keys = client.get(f"{PUBLIC}{tenant_id}/discovery/v2.0/keys").json()["keys"]
    return json.dumps({"keys": [*({**k, **changes} for k in keys), *extra]})


# -- 1. metadata-supplied URLs are pinned to the instance's cloud -------------------------------------------


ATTACKER_URLS = [
    "https://login.microsoftonline.com@attacker.example/{t}/discovery/v2.0/keys",
    "https://user:pw@login.microsoftonline.com/{t}/discovery/v2.0/keys",
    "https://attacker.example/{t}/discovery/v2.0/keys",
    "https://login.microsoftonline.com.attacker.example/{t}/discovery/v2.0/keys",
    "https://attacker.example\\@login.microsoftonline.com/{t}/discovery/v2.0/keys",
    "https://login.microsoftonline.com:8443/{t}/discovery/v2.0/keys",
    "http://login.microsoftonline.com/{t}/discovery/v2.0/keys",
    "https://login.chinacloudapi.cn/{t}/discovery/v2.0/keys",  # a login host, but of another cloud
    "//attacker.example/keys",
    "/{t}/discovery/v2.0/keys",
]


@pytest.mark.parametrize("url", ATTACKER_URLS)
def test_jwks_uri_off_the_instance_fails_closed(fake_entra: FakeEntra, make_auth: MakeAuth, url: str) -> None:
    s = fake_entra.quickstart()
    tid = s.tenant.tenant_id
    fake_entra.faults.set("openid_configuration", body=metadata(fake_entra, tid, jwks_uri=url.format(t=tid)))
    fake_entra.reset_counts()
    auth = make_auth()
    unavailable(auth, fake_entra.app_token(s.client, resource=s.api))
    assert fake_entra.request_count("jwks") == 0  # the named keys were never fetched


def test_token_endpoint_off_the_instance_fails_closed(
    fake_entra: FakeEntra, make_auth: MakeAuth, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = fake_entra.quickstart()
    tid = s.tenant.tenant_id
    body = metadata(fake_entra, tid, token_endpoint=f"https://login.microsoftonline.com@attacker.example/{tid}/t")
    fake_entra.faults.set("openid_configuration", body=body)
    auth = make_auth()
    token = fake_entra.app_token(s.client, resource=s.api)
    with caplog.at_level(logging.WARNING, logger="entra_mw.jwks"):
        unavailable(auth, token)
        fake_clock.advance(2)  # past the failure back-off; the async path refuses the same way
        with pytest.raises(ProviderUnavailable):
            anyio.run(auth.avalidate, token)
    assert caplog.text.count("metadata token_endpoint") == 2
    assert fake_entra.request_count("jwks") == 0


def test_jwks_uri_on_an_alias_of_the_cloud_is_fetched(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    tid = s.tenant.tenant_id
    alias = f"https://login.windows.net/{tid}/discovery/v2.0/keys"
    fake_entra.faults.set("openid_configuration", body=metadata(fake_entra, tid, jwks_uri=alias))
    principal = make_auth().validate(fake_entra.app_token(s.client, resource=s.api))
    assert principal.tid == tid


@pytest.mark.parametrize(
    ("url", "instance", "allowed"),
    [
        ("https://login.microsoftonline.com/t/keys", PUBLIC, True),
        ("https://LOGIN.microsoftonline.com:443/t/keys", PUBLIC, True),
        ("https://sts.windows.net/t/keys", PUBLIC, True),
        ("https://login.microsoft.com/t/keys?appid=x", PUBLIC, True),
        ("https://login.usgovcloudapi.net/t/keys", "https://login.microsoftonline.us/", True),
        ("https://login.microsoftonline.us/t/keys", PUBLIC, False),
        ("https://127.0.0.1:8443/t/keys", "https://127.0.0.1:8443/", True),
        ("https://127.0.0.1:8444/t/keys", "https://127.0.0.1:8443/", False),
        ("https://localhost:8443/t/keys", "https://127.0.0.1:8443/", False),
        ("http://127.0.0.1:8080/t/keys", "http://127.0.0.1:8080/", True),
        ("https://127.0.0.1:8080/t/keys", "http://127.0.0.1:8080/", False),
        ("https://login.windows.net/t/keys", "https://login.microsoftonline.com:8443/", False),
        ("https://@login.microsoftonline.com/t/keys", PUBLIC, False),
        ("https://login.microsoftonline.com:/t/keys", PUBLIC, True),
        ("https:///t/keys", PUBLIC, False),
        ("https://login.microsoftonline.com:99999/t/keys", PUBLIC, False),
        ("ftp://login.microsoftonline.com/t/keys", PUBLIC, False),
    ],
)
def test_pinning_rule(url: str, instance: str, allowed: bool) -> None:
    assert (_jwks.pinned_url_problem(url, instance) is None) is allowed


# -- 2. tid is a GUID -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tid", ["common", "organizations", "contoso.com", "x/../y", "{72f988bf-86f1-41af-91ab-2d7cd011db47}", "a b"]
)
def test_tid_must_be_a_guid(fake_entra: FakeEntra, make_auth: MakeAuth, tid: str) -> None:
    auth = make_auth(tenant_id="organizations")
    claims = {**good_claims(fake_entra), "tid": tid, "iss": f"https://login.microsoftonline.com/{tid}/v2.0"}
    assert reason(auth, fake_entra.sign(claims)) == "bad_tenant"


def test_guid_tid_still_accepted_multi_tenant(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    auth = make_auth(tenant_id="organizations")
    tid = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    claims = {**good_claims(fake_entra), "tid": tid, "iss": f"https://login.microsoftonline.com/{tid}/v2.0"}
    assert auth.validate(fake_entra.sign(claims)).tid == tid


# -- 3. a JWK's alg is kept and enforced -------------------------------------------------------------------


def test_key_published_for_another_algorithm_is_refused(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    fake_entra.faults.set("jwks", body=jwks_with(fake_entra, s.tenant.tenant_id, alg="RS512"))
    auth = make_auth(algorithms=("RS256", "RS512"))
    assert reason(auth, fake_entra.app_token(s.client, resource=s.api)) == "bad_algorithm"
    claims = good_claims(fake_entra)
    as_rs512 = fake_entra.mint_raw({"alg": "RS512", "kid": fake_entra.current_kid, "typ": "JWT"}, claims, alg="RS512")
    assert auth.validate(as_rs512).tid == s.tenant.tenant_id


def test_key_published_for_its_algorithm_is_used(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    fake_entra.faults.set("jwks", body=jwks_with(fake_entra, s.tenant.tenant_id, alg="RS256"))
    auth = make_auth(algorithms=("RS256", "PS256"))
    auth.validate(fake_entra.app_token(s.client, resource=s.api))
    claims = good_claims(fake_entra)
    as_ps256 = fake_entra.mint_raw({"alg": "PS256", "kid": fake_entra.current_kid, "typ": "JWT"}, claims, alg="PS256")
    assert reason(auth, as_ps256) == "bad_algorithm"


# -- 4. plain http only by an explicit opt-in, only on loopback ---------------------------------------------


def test_http_instance_refused_even_with_an_injected_transport(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    s = fake_entra.quickstart()
    config = EntraConfig(tenant_id=s.tenant.tenant_id, client_id=s.api.app_id, instance="http://login.microsoftonline.com/")
    with pytest.raises(ConfigurationError, match="https"):
        EntraAuth(config, transport=fake_entra.transport, clock=fake_clock)


def test_http_jwks_uri_refused_with_a_production_transport(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    # A transport that is not a test double (a proxying production transport is injected just the same).
    s = fake_entra.quickstart()
    tid = s.tenant.tenant_id
    http_keys = f"http://login.microsoftonline.com/{tid}/discovery/v2.0/keys"
    fake_entra.faults.set("openid_configuration", body=metadata(fake_entra, tid, jwks_uri=http_keys))
    production_like = httpx2.MockTransport(fake_entra.handle)
    fake_entra.reset_counts()
    unavailable(make_auth(transport=production_like), fake_entra.app_token(s.client, resource=s.api))
    assert fake_entra.request_count("jwks") == 0


def test_allow_insecure_http_on_loopback(fake_entra: FakeEntra, make_auth: MakeAuth) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(instance="http://127.0.0.1:8080/", allow_insecure_http=True)
    assert auth.validate(fake_entra.app_token(s.client, resource=s.api)).tid == s.tenant.tenant_id


def test_http_loopback_without_the_opt_in_fails_closed(
    fake_entra: FakeEntra, make_auth: MakeAuth, caplog: pytest.LogCaptureFixture
) -> None:
    s = fake_entra.quickstart()
    auth = make_auth(instance="http://127.0.0.1:8080/")
    with caplog.at_level(logging.WARNING, logger="entra_mw.jwks"):
        unavailable(auth, fake_entra.app_token(s.client, resource=s.api))
    assert "allow_insecure_http" in caplog.text


@pytest.mark.parametrize(
    "instance", ["http://login.microsoftonline.com/", "https://login.microsoftonline.com/", "http://10.0.0.1/"]
)
def test_allow_insecure_http_refused_off_loopback(instance: str) -> None:
    with pytest.raises(ConfigurationError, match="loopback") as info:
        EntraConfig(tenant_id="organizations", client_id=CLIENT, instance=instance, allow_insecure_http=True)
    assert info.value.key == "allow_insecure_http"


@pytest.mark.parametrize("instance", ["http://localhost:9/", "http://[::1]:9/", "http://127.0.0.2/"])
def test_allow_insecure_http_accepted_on_loopback(instance: str) -> None:
    assert EntraConfig(tenant_id="organizations", client_id=CLIENT, instance=instance, allow_insecure_http=True)


def test_allow_insecure_http_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        EntraConfig(tenant_id="organizations", client_id=CLIENT, allow_insecure_http="false")  # type: ignore[arg-type]


# -- 5. a missing CA file or a failed certificate: 503 and a log line that says so ----------------------------


@pytest.fixture
def served(fake_entra: FakeEntra) -> Iterator[Any]:
    with fake_entra.serve() as served:
        yield served


def served_auth(fake_entra: FakeEntra, fake_clock: FakeClock, served: Any, verify: Any) -> EntraAuth:
    s = fake_entra.quickstart()
    config = EntraConfig(tenant_id=s.tenant.tenant_id, client_id=s.api.app_id, instance=served.base_url)
    return EntraAuth(config, clock=fake_clock, verify=verify)


def test_served_with_its_ca_file_works(fake_entra: FakeEntra, fake_clock: FakeClock, served: Any) -> None:
    s = fake_entra.quickstart()
    with served_auth(fake_entra, fake_clock, served, served.ca_file) as auth:
        assert auth.validate(fake_entra.app_token(s.client, resource=s.api)).tid == s.tenant.tenant_id


def test_verify_path_gone(
    fake_entra: FakeEntra, fake_clock: FakeClock, served: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = fake_entra.quickstart()
    gone = str(tmp_path / "gone-ca.pem")
    with served_auth(fake_entra, fake_clock, served, gone) as auth, caplog.at_level(logging.WARNING):
        unavailable(auth, fake_entra.app_token(s.client, resource=s.api))
    assert "CA file is missing" in caplog.text
    assert gone in caplog.text


def test_ssl_cert_file_gone(
    fake_entra: FakeEntra,
    fake_clock: FakeClock,
    served: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = fake_entra.quickstart()
    gone = str(tmp_path / "gone-ca.pem")
    monkeypatch.setenv("SSL_CERT_FILE", gone)
    token = fake_entra.app_token(s.client, resource=s.api)
    with served_auth(fake_entra, fake_clock, served, True) as auth, caplog.at_level(logging.WARNING):
        unavailable(auth, token)
        fake_clock.advance(2)  # past the failure back-off: the async client is built and fails the same way
        with pytest.raises(ProviderUnavailable):
            anyio.run(auth.avalidate, token)
    assert caplog.text.count("CA file is missing: SSL_CERT_FILE=") == 2


def test_ca_file_that_is_not_a_bundle(
    fake_entra: FakeEntra, fake_clock: FakeClock, served: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = fake_entra.quickstart()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with served_auth(fake_entra, fake_clock, served, str(junk)) as auth, caplog.at_level(logging.WARNING):
        unavailable(auth, fake_entra.app_token(s.client, resource=s.api))
    assert "CA file cannot be loaded" in caplog.text


def test_certificate_failing_verification_is_logged_as_such(
    fake_entra: FakeEntra,
    fake_clock: FakeClock,
    served: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = fake_entra.quickstart()
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with served_auth(fake_entra, fake_clock, served, True) as auth, caplog.at_level(logging.WARNING):
        unavailable(auth, fake_entra.app_token(s.client, resource=s.api))
    assert "TLS certificate verification failed" in caplog.text
    assert "ConnectError" not in caplog.text


# -- 6.-9. the token policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("aud", [["{api}"], ["{api}", "other"], ["other", "{api}"]])
def test_aud_list_refused_even_with_the_api(fake_entra: FakeEntra, auth: EntraAuth, aud: list[str]) -> None:
    s = fake_entra.quickstart()
    claims = {**good_claims(fake_entra), "aud": [a.format(api=s.api.app_id) for a in aud]}
    assert reason(auth, fake_entra.sign(claims)) == "bad_claim"


@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/json", "", None])
def test_cty_header_refused(fake_entra: FakeEntra, auth: EntraAuth, cty: str | None) -> None:
    assert reason(auth, fake_entra.sign(good_claims(fake_entra), header={"cty": cty})) == "bad_header"


def test_iat_in_the_future_refused(fake_entra: FakeEntra, auth: EntraAuth, fake_clock: FakeClock) -> None:
    claims = good_claims(fake_entra)
    now = fake_clock.time()
    auth.validate(fake_entra.sign({**claims, "iat": now + 300}))  # within clock_skew
    assert reason(auth, fake_entra.sign({**claims, "iat": now + 301})) == "issued_in_future"
    assert reason(auth, fake_entra.sign({**claims, "iat": now + 301.5, "nbf": now - 10})) == "issued_in_future"


@pytest.mark.parametrize(
    "name",
    ["TID", "Tid", "OID", "Iss", "AUD", "Scp", "ROLES", "Azp", "APPID", "Ver", "SUB", "IdTyp", "EXP", "\u017fcp"],
)
def test_case_variant_of_a_decision_claim_refused(fake_entra: FakeEntra, auth: EntraAuth, name: str) -> None:
    claims = good_claims(fake_entra)
    canonical = name.casefold()
    value = claims.get(canonical, "x")
    assert reason(auth, fake_entra.sign({**claims, name: value})) == "bad_claim"  # beside the real claim
    alone = {k: v for k, v in claims.items() if k != canonical}
    if canonical != "exp":  # without exp the token is refused as no_expiry first
        assert reason(auth, fake_entra.sign({**alone, name: value})) == "bad_claim"  # instead of it


@pytest.mark.parametrize("name", ["ALG", "Kid", "KID", "Typ", "JKU", "X5u", "Crit", "CTY", "X5T"])
def test_case_variant_of_a_header_parameter_refused(fake_entra: FakeEntra, auth: EntraAuth, name: str) -> None:
    header = {"ALG": "none", "Kid": "other", "KID": "other", "Typ": "JWT", "X5T": "x"}.get(name, "x")
    assert reason(auth, fake_entra.sign(good_claims(fake_entra), header={name: header})) == "bad_header"


def test_other_upper_case_claims_pass(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    claims = {**good_claims(fake_entra), "Name": "Alice", "XMS_CC": ["CP1"], "tidx": "1", "Ti": "2"}
    auth.validate(fake_entra.sign(claims))


@pytest.mark.parametrize(
    "where",
    ["claim value", "claim name", "nested value", "list item", "low surrogate", "header"],
)
def test_lone_surrogates_refused(fake_entra: FakeEntra, auth: EntraAuth, where: str) -> None:
    claims = good_claims(fake_entra)
    header: dict[str, Any] = {"typ": "JWT", "alg": "RS256", "kid": fake_entra.current_kid}
    if where == "claim value":
        claims["name"] = "Al\ud800ice"
    elif where == "claim name":
        claims["x\udbff"] = 1
    elif where == "nested value":
        claims["ext"] = {"a": [{"b": "\ud83d"}]}
    elif where == "list item":
        claims["roles"] = [*claims["roles"], "\udc00"]
    elif where == "low surrogate":
        claims["name"] = "\ude00\ud83d"  # a pair in the wrong order is two lone surrogates
    else:
        header["x-note"] = "\ud800"
    assert reason(auth, fake_entra.mint_raw(header, claims)) == "malformed"


def test_surrogate_pairs_and_other_escapes_pass(fake_entra: FakeEntra, auth: EntraAuth) -> None:
    claims = {**good_claims(fake_entra), "name": "\U0001f600 O\u2019Brien \\ud800", "\u00e9t\u00e9": "\u00e9"}
    principal = auth.validate(fake_entra.sign(claims))
    assert principal["name"] == "\U0001f600 O\u2019Brien \\ud800"


# -- 10. RSA keys with an exponent other than 65537 -----------------------------------------------------------


def test_rsa_exponent_other_than_65537_dropped(
    fake_entra: FakeEntra, make_auth: MakeAuth, caplog: pytest.LogCaptureFixture
) -> None:
    s = fake_entra.quickstart()
    weak = rsa.generate_private_key(public_exponent=3, key_size=2048)
    numbers = weak.public_key().public_numbers()
    weak_jwk = {
        "kty": "RSA",
        "use": "sig",
        "kid": "e3",
        "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url(numbers.e.to_bytes(1, "big")),
    }
    fake_entra.faults.set("jwks", body=jwks_with(fake_entra, s.tenant.tenant_id, weak_jwk))
    auth = make_auth()
    claims = good_claims(fake_entra)
    with caplog.at_level(logging.WARNING, logger="entra_mw.jwks"):
        forged = fake_entra.mint_raw({"alg": "RS256", "kid": "e3", "typ": "JWT"}, claims, key=weak)
        assert reason(auth, forged) == "unknown_kid"
    assert "kid='e3'" in caplog.text and "exponent is not 65537" in caplog.text
    auth.validate(fake_entra.app_token(s.client, resource=s.api))  # the tenant's real keys still load
