"""Properties: whatever the token, the metadata or the key set, validation ends in a result or one of our two
errors (401/503), never another exception and never a hang."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entra_mw import EntraAuth, EntraConfig, InvalidToken, ProviderUnavailable
from entra_mw.testing import FakeClock, FakeEntra
from entra_mw.testing._keys import b64url

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
claim_names = st.sampled_from(["aud", "iss", "tid", "ver", "exp", "nbf", "iat", "scp", "roles", "azp", "x"])
header_names = st.sampled_from(["alg", "kid", "typ", "x5t", "jku", "crit", "enc", "x"])


def _engine(fake: FakeEntra, clock: FakeClock) -> EntraAuth:
    s = fake.quickstart()
    return EntraAuth(
        EntraConfig(tenant_id=s.tenant.tenant_id, client_id=s.api.app_id),
        transport=fake.transport,
        async_transport=fake.async_transport,
        clock=clock,
    )


def _outcome(auth: EntraAuth, token: Any) -> None:
    error: InvalidToken | ProviderUnavailable | None = None
    try:
        auth.validate(token)
    except (InvalidToken, ProviderUnavailable) as exc:
        error = exc
    if error is not None:
        assert error.status_code in (401, 503)
        assert error.description


def test_any_text_or_bytes(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    auth = _engine(fake_entra, fake_clock)

    @SETTINGS
    @given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.from_regex(r"[A-Za-z0-9_.=+/-]{0,200}")))
    def check(token: str | bytes) -> None:
        _outcome(auth, token)

    check()
    auth.close()


def test_structured_tokens(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    auth = _engine(fake_entra, fake_clock)
    kid = fake_entra.current_kid

    @SETTINGS
    @given(
        st.dictionaries(header_names, json_values | st.just("RS256") | st.just(kid), max_size=5),
        st.dictionaries(claim_names, json_values, max_size=8),
        st.binary(max_size=300),
    )
    def check(header: dict[str, Any], claims: dict[str, Any], sig: bytes) -> None:
        token = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}.{b64url(sig)}"
        _outcome(auth, token)

    check()
    auth.close()


def test_mutated_valid_tokens(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    auth = _engine(fake_entra, fake_clock)
    s = fake_entra.quickstart()
    good = fake_entra.app_token(s.client, resource=s.api)
    auth.validate(good)

    @SETTINGS
    @given(st.integers(0, len(good) - 1), st.characters(codec="ascii"), st.booleans())
    def check(at: int, char: str, insert: bool) -> None:
        token = good[:at] + char + good[at + (0 if insert else 1) :]
        if token != good:
            with pytest.raises((InvalidToken, ProviderUnavailable)):
                auth.validate(token)

    check()
    auth.close()


def _document_engine(metadata: bytes | None, jwks: bytes | None, clock: FakeClock) -> EntraAuth:
    default_meta = json.dumps(
        {
            "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
            "jwks_uri": "https://login.microsoftonline.com/k",
        }
    ).encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/k":
            return httpx2.Response(200, content=jwks if jwks is not None else b'{"keys": []}')
        return httpx2.Response(200, content=metadata if metadata is not None else default_meta)

    return EntraAuth(
        EntraConfig(tenant_id=TENANT, client_id=CLIENT),
        transport=httpx2.MockTransport(handler),
        clock=clock,
    )


jwk_like = st.fixed_dictionaries(
    {},
    optional={
        "kty": st.sampled_from(["RSA", "EC", "oct"]) | json_values,
        "use": st.sampled_from(["sig", "enc"]) | json_values,
        "kid": st.text(max_size=10) | json_values,
        "n": st.text(alphabet="AQgw-_Bx", max_size=400) | json_values,
        "e": st.sampled_from(["AQAB", "Aw", "AA", ""]) | json_values,
        "alg": st.sampled_from(["RS256", "HS256"]) | json_values,
        "issuer": json_values,
    },
)


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(lambda keys: json.dumps({"keys": keys}).encode(), st.lists(jwk_like, max_size=4)),
        st.builds(lambda v: json.dumps(v).encode(), json_values),
    )
)
def test_any_jwks_body(body: bytes) -> None:
    clock = FakeClock()
    with _document_engine(None, body, clock) as auth:
        try:
            auth.startup()
        except ProviderUnavailable:
            pass
        _outcome(auth, "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJleHAiOjF9.AA")


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda v: json.dumps(v).encode(),
            st.dictionaries(st.sampled_from(["issuer", "jwks_uri", "x"]), json_values | st.text(max_size=40)),
        ),
    )
)
def test_any_metadata_body(body: bytes) -> None:
    clock = FakeClock()
    with _document_engine(body, None, clock) as auth:
        with pytest.raises(ProviderUnavailable):
            auth.startup()
        _outcome(auth, "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJleHAiOjF9.AA")
