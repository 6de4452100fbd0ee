"""JWKS shape (kty, use, kid, x5t, n, e, x5c, issuer), rotation, app-specific keys, certificates."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx2
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from entra_mw.testing import FakeClock, FakeEntra

LOGIN = "https://login.microsoftonline.com"


def _jwks(fake: FakeEntra, path: str) -> list[dict[str, Any]]:
    with httpx2.Client(transport=fake.transport) as client:
        r = client.get(f"{LOGIN}/{path}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    keys: list[dict[str, Any]] = r.json()["keys"]
    return keys


def _b64url_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def test_jwk_shape_and_consistency(fake_entra: FakeEntra) -> None:
    tid = fake_entra.quickstart().tenant.tenant_id
    (key,) = _jwks(fake_entra, f"{tid}/discovery/v2.0/keys")
    assert set(key) == {"kty", "use", "kid", "x5t", "n", "e", "x5c", "issuer"}
    assert key["kty"] == "RSA"
    assert key["use"] == "sig"
    assert key["issuer"] == f"{LOGIN}/{tid}/v2.0"
    der = base64.b64decode(key["x5c"][0])
    thumb = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    assert key["x5t"] == thumb == key["kid"] == fake_entra.current_kid
    public = x509.load_der_x509_certificate(der).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    assert public.public_numbers().n == _b64url_int(key["n"])
    assert public.public_numbers().e == _b64url_int(key["e"]) == 65537


@pytest.mark.parametrize("path", ["common/discovery/v2.0/keys", "organizations/discovery/keys", "discovery/keys"])
def test_multi_tenant_keys_carry_the_template_issuer(fake_entra: FakeEntra, path: str) -> None:
    keys = _jwks(fake_entra, path)
    assert [k["issuer"] for k in keys] == [f"{LOGIN}/{{tenantid}}/v2.0"]


def test_rotation_keeping_old_keys(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    old_kid = fake_entra.current_kid
    old_token = fake_entra.app_token(s.client, resource=s.api)
    new_kid = fake_entra.rotate_keys()
    assert new_kid != old_kid
    assert fake_entra.current_kid == new_kid
    kids = {k["kid"] for k in _jwks(fake_entra, "common/discovery/v2.0/keys")}
    assert kids == {old_kid, new_kid}
    new_token = fake_entra.app_token(s.client, resource=s.api)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert fake_entra.decode(old_token)["aud"] == s.api.app_id
    assert fake_entra.decode(new_token)["aud"] == s.api.app_id


def test_rotation_dropping_old_keys(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    old_kid = fake_entra.current_kid
    old_token = fake_entra.app_token(s.client, resource=s.api)
    new_kid = fake_entra.rotate_keys(keep_old=False)
    assert [k["kid"] for k in _jwks(fake_entra, "common/discovery/v2.0/keys")] == [new_kid]
    with pytest.raises(jwt.InvalidTokenError):
        fake_entra.decode(old_token)
    # A retired key can still sign on request (for "token signed by a retired key" tests).
    retired = fake_entra.sign({"aud": "x"}, kid=old_kid)
    assert jwt.get_unverified_header(retired)["kid"] == old_kid


def test_app_specific_keys(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    app_kid = fake_entra.add_app_specific_key(s.api)
    tid = s.tenant.tenant_id
    tenant_kids = {k["kid"] for k in _jwks(fake_entra, f"{tid}/discovery/v2.0/keys")}
    app_keys = _jwks(fake_entra, f"{tid}/discovery/v2.0/keys?appid={s.api.app_id}")
    assert app_kid not in tenant_kids
    assert [k["kid"] for k in app_keys] == [app_kid]
    assert app_keys[0]["issuer"] == f"{LOGIN}/{tid}/v2.0"
    # An app without its own keys gets the tenant keys.
    other = {k["kid"] for k in _jwks(fake_entra, f"{tid}/discovery/v2.0/keys?appid={s.client.app_id}")}
    assert other == tenant_kids
    for_api = fake_entra.app_token(s.client, resource=s.api)
    for_blueprint = fake_entra.user_token(s.user, client=s.client, resource=s.blueprint)
    assert jwt.get_unverified_header(for_api)["kid"] == app_kid
    assert jwt.get_unverified_header(for_blueprint)["kid"] == fake_entra.current_kid
    assert fake_entra.decode(for_api)["aud"] == s.api.app_id


def test_separate_fakes_have_separate_keys() -> None:
    a, b = FakeEntra(clock=FakeClock()), FakeEntra(clock=FakeClock())
    key_a = a.signing_key().public_key.public_numbers().n
    key_b = b.signing_key().public_key.public_numbers().n
    assert a.current_kid != b.current_kid
    assert key_a != key_b
    token = a.sign({"aud": "x"})
    with pytest.raises(jwt.InvalidTokenError):
        b.decode(token)


def test_add_certificate(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    key_pem, cert_pem = fake_entra.add_certificate(s.client)
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    (registered,) = s.client.certificates
    der = cert.public_bytes(serialization.Encoding.DER)
    assert registered.thumbprint_sha1 == base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    assert registered.thumbprint_sha256 == (
        base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    )
    assert registered.pem == cert_pem
    # The client's key is never one of FakeEntra's signing keys.
    assert key.public_key().public_numbers().n != fake_entra.signing_key().public_key.public_numbers().n
