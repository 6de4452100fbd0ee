"""``EntraAuth.authenticate`` / ``aauthenticate``: the one call every adapter makes."""

from __future__ import annotations

import asyncio
import json

import pytest

from entra_mw import (
    AuthContext,
    Challenge,
    EntraAuth,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    Principal,
    ProviderUnavailable,
    Requirement,
)
from entra_mw.testing import FakeClock, FakeEntra

from ._support import MakeAuth


def _user_token(fake: FakeEntra, scopes: tuple[str, ...] = ("Weather.Read",)) -> str:
    s = fake.quickstart()
    return fake.user_token(s.user, client=s.client, resource=s.api, scopes=scopes)


def test_valid_token_in_every_shape(auth: EntraAuth, fake_entra: FakeEntra) -> None:
    token = _user_token(fake_entra)
    for value in (f"Bearer {token}", f"Bearer {token}".encode(), [f"Bearer {token}"], (f"bearer {token}".encode(),)):
        ctx = auth.authenticate(value)
        assert isinstance(ctx, AuthContext)
        assert ctx.principal is not None and ctx.principal.scopes == {"Weather.Read"}
        assert ctx.token == token


def test_missing_token(auth: EntraAuth) -> None:
    values: list[str | list[str] | None] = [None, [], "", "Basic dXNlcjpwYXNz"]
    for value in values:
        with pytest.raises(MissingToken) as info:
            auth.authenticate(value)
        assert info.value.status_code == 401
        assert dict(info.value.headers())["WWW-Authenticate"] == "Bearer"
        anonymous = auth.authenticate(value, required=False)
        assert anonymous.principal is None and anonymous.token is None


def test_malformed_requests_are_400(auth: EntraAuth, fake_entra: FakeEntra) -> None:
    token = _user_token(fake_entra)
    cases: list[tuple[object, object]] = [
        ([f"Bearer {token}", f"Bearer {token}"], None),  # two headers
        (f"Bearer {token}, Bearer {token}", None),  # folded
        (f"Bearer {token}", f"a=1&access_token={token}"),  # query token as well
        (None, b"access_token=x"),  # query token only
        ("Bearer =", None),
    ]
    for value, query in cases:
        with pytest.raises(InvalidRequest) as info:
            auth.authenticate(value, query=query, required=False)  # type: ignore[arg-type]
        assert info.value.status_code == 400


def test_invalid_token_is_401_even_when_optional(auth: EntraAuth) -> None:
    with pytest.raises(InvalidToken):
        auth.authenticate("Bearer abc.def.ghi", required=False)


def test_requirement(auth: EntraAuth, fake_entra: FakeEntra) -> None:
    token = _user_token(fake_entra)
    assert auth.authenticate(f"Bearer {token}", requirement=Requirement(scopes=["Weather.Read"])).principal
    with pytest.raises(InsufficientScope) as info:
        auth.authenticate(f"Bearer {token}", requirement=Requirement(scopes=["Weather.Write"]))
    assert info.value.status_code == 403
    assert 'scope="Weather.Write"' in (info.value.www_authenticate or "")
    # Not checked for anonymous requests.
    assert auth.authenticate(None, required=False, requirement=Requirement(scopes=["X"])).principal is None


def test_challenge_parameters_are_added_on_a_copy(auth: EntraAuth, fake_entra: FakeEntra) -> None:
    challenge = Challenge(resource_metadata="https://mcp.example/.well-known/oauth-protected-resource", scope=("s1",))
    with pytest.raises(MissingToken) as info:
        auth.authenticate(None, challenge=challenge)
    header = info.value.www_authenticate or ""
    assert header == 'Bearer scope="s1", resource_metadata="https://mcp.example/.well-known/oauth-protected-resource"'
    token = _user_token(fake_entra)
    with pytest.raises(InsufficientScope) as denied:
        auth.authenticate(f"Bearer {token}", requirement=Requirement(scopes=["W"]), challenge=challenge)
    # The error's own missing scope wins over the adapter's default scope.
    assert 'scope="W"' in (denied.value.www_authenticate or "")
    assert "resource_metadata=" in (denied.value.www_authenticate or "")
    shared = InvalidToken("shared")
    copy = challenge.apply(shared)
    assert copy is not shared and shared.resource_metadata is None and copy.resource_metadata is not None


def test_async_twin(auth: EntraAuth, fake_entra: FakeEntra) -> None:
    token = _user_token(fake_entra)

    async def main() -> None:
        ctx = await auth.aauthenticate(f"Bearer {token}".encode(), requirement=Requirement(scopes=["Weather.Read"]))
        assert ctx.principal is not None
        with pytest.raises(MissingToken):
            await auth.aauthenticate(None)
        assert (await auth.aauthenticate(None, required=False)).principal is None
        with pytest.raises(InvalidRequest):
            await auth.aauthenticate([b"Bearer a", b"Bearer b"])

    asyncio.run(main())


def test_keys_unavailable_is_503(make_auth: MakeAuth, fake_entra: FakeEntra) -> None:
    auth = make_auth()
    token = _user_token(fake_entra)
    fake_entra.faults.outage("jwks")
    with pytest.raises(ProviderUnavailable) as info:
        auth.authenticate(f"Bearer {token}")
    err = info.value
    assert err.status_code == 503
    assert ("Retry-After", "5") in err.headers()
    assert json.loads(err.body())["error"] == "temporarily_unavailable"


def test_context_require(auth: EntraAuth, fake_entra: FakeEntra) -> None:
    token = _user_token(fake_entra)
    ctx = auth.authenticate(f"Bearer {token}")
    assert ctx.require() is ctx.principal
    assert ctx.require(Requirement(scopes=["Weather.Read"])) is ctx.principal
    with pytest.raises(InsufficientScope):
        ctx.require(Requirement(roles=["Weather.Admin"]))
    with pytest.raises(MissingToken):
        auth.authenticate(None, required=False).require()


def test_settings_build_engines(fake_entra: FakeEntra, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    from entra_mw import ConfigurationError, EntraConfig
    from entra_mw._settings import auth_from_settings

    s = fake_entra.quickstart()
    mapping = {"tenant_id": s.tenant.tenant_id, "client_id": s.api.app_id}
    built: list[EntraConfig] = []

    def factory(config: EntraConfig) -> EntraAuth:
        built.append(config)
        return EntraAuth(config, transport=fake_entra.transport, clock=fake_clock)

    with auth_from_settings(mapping, factory) as auth:
        assert built and auth.config.client_id == s.api.app_id
        assert auth.authenticate(f"Bearer {_user_token(fake_entra)}").principal is not None
    monkeypatch.setenv("AzureAd__TenantId", s.tenant.tenant_id)
    monkeypatch.setenv("AzureAd__ClientId", s.api.app_id)
    with auth_from_settings("env") as env_auth:
        assert env_auth.config.tenant_id == s.tenant.tenant_id
    for setting, factory_path in [
        (None, None),
        ("environment", None),
        (42, None),
        (mapping, "tests.core.test_authenticate:not_there"),
        (mapping, "no_such_module_xyz.build"),
        (mapping, 42),
        (mapping, "nodots"),
    ]:
        with pytest.raises(ConfigurationError):
            auth_from_settings(setting, factory_path)
    with pytest.raises(ConfigurationError, match="not an EntraAuth"):
        auth_from_settings(mapping, lambda config: object())


def test_a_cached_token_gets_the_same_verdicts(auth: EntraAuth, fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    # Once a token is in the validated-token cache, authenticate skips the bearer parse; every rule still holds.
    token = _user_token(fake_entra)
    assert auth.authenticate(f"Bearer {token}").token == token  # now cached
    with pytest.raises(InvalidRequest):
        auth.authenticate(f"Bearer {token}", query=f"access_token={token}")
    with pytest.raises(InvalidRequest):
        auth.authenticate([f"Bearer {token}", f"Bearer {token}"])
    with pytest.raises(InvalidRequest):
        auth.authenticate(f"Bearer {token}, Bearer {token}")
    with pytest.raises(InsufficientScope):
        auth.authenticate(f"Bearer {token}".encode(), requirement=Requirement(scopes=["Weather.Write"]))
    assert auth.authenticate(f"bearer  {token}".encode()).token == token  # RFC 6750 allows 1*SP
    fake_clock.advance(24 * 3600)
    with pytest.raises(InvalidToken):
        auth.authenticate(f"Bearer {token}")  # the cache never outlives the token


def test_a_subclass_that_overrides_validation_is_always_asked(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    s = fake_entra.quickstart()
    calls: list[str] = []

    class Counting(EntraAuth):
        def validate(self, token: str) -> Principal:
            calls.append(token)
            return super().validate(token)

    from entra_mw import EntraConfig

    config = EntraConfig(tenant_id=s.tenant.tenant_id, client_id=s.api.app_id)
    with Counting(config, transport=fake_entra.transport, clock=fake_clock) as auth:
        token = _user_token(fake_entra)
        auth.authenticate(f"Bearer {token}")
        auth.authenticate(f"Bearer {token}")
    assert len(calls) == 2
