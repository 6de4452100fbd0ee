"""No log record and no error message ever carries a token (or a piece of one), whatever goes wrong."""

from __future__ import annotations

import logging

import pytest

from entra_mw import EntraAuth, EntraConfig, InvalidToken, ProviderUnavailable
from entra_mw.testing import FakeClock, FakeEntra


def _pieces(token: str) -> list[str]:
    _head, payload, sig = token.split(".")
    # The header segment of a well-formed token is not secret (it names the key); everything else is.
    return [p for p in (token, payload, sig, payload[:40], sig[:40]) if len(p) >= 8]


def test_no_token_in_logs_or_errors(
    fake_entra: FakeEntra, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    s = fake_entra.quickstart()
    auth = EntraAuth(
        EntraConfig(tenant_id=s.tenant.tenant_id, client_id=s.api.app_id),
        transport=fake_entra.transport,
        async_transport=fake_entra.async_transport,
        clock=fake_clock,
    )
    fake_entra.faults.outage("jwks", times=1)
    tokens = [fake_entra.app_token(s.client, resource=s.api)]
    with pytest.raises(ProviderUnavailable) as unavailable:
        auth.validate(tokens[0])
    messages = [str(unavailable.value), unavailable.value.description]
    fake_clock.advance(1)
    good = fake_entra.user_token(s.user, client=s.client, resource=s.api)
    auth.validate(good)
    tokens.append(good)
    head, payload, sig = good.split(".")
    bad = [
        f"{head}.{payload}.{sig[:-4]}AAAA",  # bad signature
        fake_entra.app_token(s.client, resource=s.api, extra_claims={"aud": "nope"}),
        fake_entra.app_token(s.client, resource=s.api, extra_claims={"iss": "https://evil.example/x"}),
        fake_entra.app_token(s.client, resource=s.api, extra_claims={"ver": None}),
        fake_entra.app_token(s.client, resource=s.api, lifetime=1),
        fake_entra.mint_raw({"alg": "none", "kid": fake_entra.current_kid}, fake_entra.decode(good), alg="none"),
        fake_entra.mint_raw({"alg": "RS256", "kid": "unknown"}, fake_entra.decode(good)),
        f"{head}.{payload}",
        f"{head}.{payload}.{sig}.{sig}.{sig}",
        f"{head}.{payload}.{sig}==",
        # A token whose claims carry another token: logged claim values must never echo it.
        fake_entra.app_token(s.client, resource=s.api, extra_claims={"aud": good, "tid": good}),
    ]
    fake_clock.advance(400)
    for token in bad:
        tokens.append(token)
        with pytest.raises(InvalidToken) as info:
            auth.validate(token)
        messages += [str(info.value), info.value.description, info.value.www_authenticate or ""]
        messages.append(info.value.body().decode())
    records = [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    assert any("token rejected" in r for r in records)
    for token in tokens:
        for piece in _pieces(token) if token.count(".") == 2 else [token]:
            for text in records + messages:
                assert piece not in text
    auth.close()
