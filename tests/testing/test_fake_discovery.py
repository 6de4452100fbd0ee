"""Discovery: instance discovery, v1/v2 openid-configuration for tenants, common, organizations, appid."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from entra_mw.testing import FakeClock, FakeEntra

LOGIN = "https://login.microsoftonline.com"


def _client(fake: FakeEntra) -> httpx2.Client:
    return httpx2.Client(transport=fake.transport)


def test_v2_metadata_for_tenant_id_and_domain(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    tid = s.tenant.tenant_id
    with _client(fake_entra) as client:
        for segment in (tid, s.tenant.domain, tid.upper()):
            r = client.get(f"{LOGIN}/{segment}/v2.0/.well-known/openid-configuration")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/json")
            assert "max-age" in r.headers["cache-control"]
            doc = r.json()
            assert doc["issuer"] == f"{LOGIN}/{tid}/v2.0"
            assert doc["token_endpoint"] == f"{LOGIN}/{tid}/oauth2/v2.0/token"
            assert doc["jwks_uri"] == f"{LOGIN}/{tid}/discovery/v2.0/keys"
            assert doc["authorization_endpoint"] == f"{LOGIN}/{tid}/oauth2/v2.0/authorize"
            assert doc["device_authorization_endpoint"] == f"{LOGIN}/{tid}/oauth2/v2.0/devicecode"
            assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
            assert set(doc["token_endpoint_auth_methods_supported"]) == {
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            }
            assert doc["subject_types_supported"] == ["pairwise"]


@pytest.mark.parametrize("segment", ["common", "organizations", "Common"])
def test_v2_metadata_for_multi_tenant_authorities(fake_entra: FakeEntra, segment: str) -> None:
    with _client(fake_entra) as client:
        doc = client.get(f"{LOGIN}/{segment}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{LOGIN}/{{tenantid}}/v2.0"
    assert doc["token_endpoint"] == f"{LOGIN}/{segment.lower()}/oauth2/v2.0/token"
    assert doc["jwks_uri"] == f"{LOGIN}/{segment.lower()}/discovery/v2.0/keys"


def test_v1_metadata(fake_entra: FakeEntra) -> None:
    tid = fake_entra.quickstart().tenant.tenant_id
    with _client(fake_entra) as client:
        doc = client.get(f"{LOGIN}/{tid}/.well-known/openid-configuration").json()
        common = client.get(f"{LOGIN}/common/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"https://sts.windows.net/{tid}/"
    assert doc["jwks_uri"] == f"{LOGIN}/{tid}/discovery/keys"
    assert doc["token_endpoint"] == f"{LOGIN}/{tid}/oauth2/token"
    assert doc["authorization_endpoint"] == f"{LOGIN}/{tid}/oauth2/authorize"
    assert common["issuer"] == "https://sts.windows.net/{tenantid}/"


def test_appid_query_is_carried_to_jwks_uri(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    with _client(fake_entra) as client:
        v2 = client.get(f"{LOGIN}/{s.tenant.tenant_id}/v2.0/.well-known/openid-configuration?appid={s.api.app_id}")
        v1 = client.get(f"{LOGIN}/common/.well-known/openid-configuration", params={"appid": s.api.app_id})
    assert v2.json()["jwks_uri"] == f"{LOGIN}/{s.tenant.tenant_id}/discovery/v2.0/keys?appid={s.api.app_id}"
    assert v1.json()["jwks_uri"] == f"{LOGIN}/common/discovery/keys?appid={s.api.app_id}"


def test_documents_use_the_request_host_but_issuers_use_the_authority_host() -> None:
    fake = FakeEntra(clock=FakeClock(), authority_host="login.microsoftonline.us")
    tenant = fake.add_tenant()
    with _client(fake) as client:
        doc = client.get(f"http://fake.test:8080/{tenant.tenant_id}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"https://login.microsoftonline.us/{tenant.tenant_id}/v2.0"
    assert doc["jwks_uri"] == f"http://fake.test:8080/{tenant.tenant_id}/discovery/v2.0/keys"


@pytest.mark.parametrize(
    "path",
    [
        "nope.onmicrosoft.com/v2.0/.well-known/openid-configuration",
        "00000000-0000-0000-0000-000000000000/.well-known/openid-configuration",
        "consumers-x/discovery/v2.0/keys",
    ],
)
def test_unknown_tenant_is_aadsts90002(fake_entra: FakeEntra, path: str) -> None:
    with _client(fake_entra) as client:
        r = client.get(f"{LOGIN}/{path}")
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "invalid_tenant"
    assert body["error_codes"] == [90002]
    assert body["error_description"].startswith("AADSTS90002: Tenant ")
    assert "Trace ID: " in body["error_description"]
    assert body["correlation_id"]
    assert body["trace_id"]
    assert body["timestamp"]


def test_instance_discovery(fake_entra: FakeEntra) -> None:
    tid = fake_entra.quickstart().tenant.tenant_id
    with _client(fake_entra) as client:
        r = client.get(
            f"{LOGIN}/common/discovery/instance",
            params={"api-version": "1.0", "authorization_endpoint": f"{LOGIN}/{tid}/oauth2/v2.0/authorize"},
        )
        other = client.get(
            f"{LOGIN}/common/discovery/instance",
            params={"authorization_endpoint": "https://127.0.0.1:8443/common/oauth2/v2.0/authorize"},
        )
        bad = client.get(f"{LOGIN}/common/discovery/instance", params={"api-version": "1.0"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["tenant_discovery_endpoint"] == f"{LOGIN}/{tid}/v2.0/.well-known/openid-configuration"
    assert "login.microsoftonline.com" in doc["metadata"][0]["aliases"]
    assert other.json()["tenant_discovery_endpoint"] == (
        "https://127.0.0.1:8443/common/v2.0/.well-known/openid-configuration"
    )
    assert bad.status_code == 400
    assert bad.json()["error_codes"] == [50049]


def test_get_only_and_unknown_paths(fake_entra: FakeEntra) -> None:
    with _client(fake_entra) as client:
        post = client.post(f"{LOGIN}/common/v2.0/.well-known/openid-configuration", content=b"x")
        missing = client.get(f"{LOGIN}/common/something/else")
        get_token = client.get(f"{LOGIN}/common/oauth2/v2.0/token")
    assert post.status_code == 405
    assert post.headers["allow"] == "GET"
    assert missing.status_code == 404
    assert get_token.status_code == 400
    assert get_token.json()["error_codes"] == [900561]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_transport(fake_entra: FakeEntra, backend: str) -> None:
    tid = fake_entra.quickstart().tenant.tenant_id

    async def main() -> dict[str, object]:
        async with httpx2.AsyncClient(transport=fake_entra.async_transport) as client:
            r = await client.get(f"{LOGIN}/{tid}/v2.0/.well-known/openid-configuration")
            doc: dict[str, object] = r.json()
            return doc

    doc = anyio.run(main, backend=backend)
    assert doc["issuer"] == f"{LOGIN}/{tid}/v2.0"


def test_fixtures_share_the_clock_and_scenario(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    assert fake_entra.clock is fake_clock
    s = fake_entra.quickstart()
    assert fake_entra.quickstart() is s
    assert s.api.display_name == "weather-api"
    assert s.api.scopes == ("Weather.Read",)
    assert s.api.app_roles == ("Weather.Read.All",)
    assert s.user.upn == f"alice@{s.tenant.domain}"
    assert s.user.password == "P@ssw0rd!"
    assert s.blueprint.is_blueprint
    assert s.agent.blueprint_app_id == s.blueprint.app_id
    assert s.agent_user.agent_app_id == s.agent.app_id
    assert s.client.granted_roles[s.api.app_id] == frozenset({"Weather.Read.All"})
    assert any(sec.value == s.client_secret for sec in s.client.secrets)
    assert s.client_secret not in repr(s)
    assert s.blueprint_secret not in repr(s)


def test_fake_clock() -> None:
    clock = FakeClock()
    assert clock.time() == 1_800_000_000.0
    assert clock.monotonic() == 0.0
    clock.advance(90.5)
    assert clock.time() == 1_800_000_090.5
    assert clock.monotonic() == 90.5
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_plugin_import_is_light() -> None:
    from .._imports import loaded_after

    heavy = loaded_after("entra_mw.testing.pytest_plugin", ("jwt", "cryptography", "entra_mw.testing._fake"))
    assert not heavy, heavy
