from __future__ import annotations

import pytest

from entra_mw import (
    CertificateCredential,
    ClientSecret,
    ConfigurationError,
    DownstreamApi,
    EntraConfig,
    ManagedIdentityAssertion,
    SignedAssertionFile,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "11111111-2222-3333-4444-555555555555"


def base_env(**extra: str) -> dict[str, str]:
    env = {
        "AzureAd__Instance": "https://login.microsoftonline.com/",
        "AzureAd__TenantId": TENANT,
        "AzureAd__ClientId": CLIENT,
    }
    env.update(extra)
    return env


def test_minimal_config_normalises_values() -> None:
    config = EntraConfig(tenant_id="Common", client_id=CLIENT, instance="https://login.microsoftonline.com")
    assert config.tenant_id == "common"
    assert config.instance == "https://login.microsoftonline.com/"
    assert config.is_multi_tenant
    assert config.authority == "https://login.microsoftonline.com/common"
    assert config.metadata_url() == "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"
    assert config.metadata_url("1.0") == "https://login.microsoftonline.com/common/.well-known/openid-configuration"


@pytest.mark.parametrize("tenant", ["", "not a tenant", "consumers", "-bad.example", "a" * 300])
def test_bad_tenant_is_a_configuration_error(tenant: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        EntraConfig(tenant_id=tenant, client_id=CLIENT)
    assert info.value.key == "tenant_id"


def test_domain_tenant_is_accepted() -> None:
    assert EntraConfig(tenant_id="contoso.onmicrosoft.com", client_id=CLIENT).tenant_id == "contoso.onmicrosoft.com"


def test_bad_algorithms_and_skew() -> None:
    with pytest.raises(ConfigurationError, match="algorithms"):
        EntraConfig(tenant_id=TENANT, client_id=CLIENT, algorithms=("HS256",))
    with pytest.raises(ConfigurationError, match="algorithms"):
        EntraConfig(tenant_id=TENANT, client_id=CLIENT, algorithms=("none",))
    with pytest.raises(ConfigurationError, match="clock_skew"):
        EntraConfig(tenant_id=TENANT, client_id=CLIENT, clock_skew=-1)


def test_config_is_frozen_and_hides_secrets() -> None:
    config = EntraConfig(
        tenant_id=TENANT,
        client_id=CLIENT,
        credentials=[ClientSecret("s3cr3t-value")],
        redis_url="redis://:pw@localhost/0",
        cache_encryption_key="k3y",
    )
    with pytest.raises(AttributeError):
        config.tenant_id = "x"  # type: ignore[misc]
    text = repr(config)
    assert "s3cr3t-value" not in text
    assert ":pw@" not in text
    assert "k3y" not in text


def test_from_env_reads_the_sidecar_variables(tmp_path: pytest.TempPathFactory) -> None:
    env = base_env(
        AzureAd__Audience="api://weather",
        AzureAd__TokenValidationParameters__ValidAudiences__0="api://other",
        AzureAd__TokenValidationParameters__ClockSkew="00:02:00",
        AzureAd__ExtraQueryParameters__appid=CLIENT,
        AzureAd__ClientCredentials__0__SourceType="SignedAssertionFilePath",
        AzureAd__ClientCredentials__1__SourceType="ClientSecret",
        AzureAd__ClientCredentials__1__ClientSecret="the-secret",
        AzureAd__ClientCredentials__2__SourceType="SignedAssertionFromManagedIdentity",
        AzureAd__ClientCredentials__2__ManagedIdentityClientId="mi-client",
        AzureAd__ClientCredentials__10__SourceType="Path",
        AzureAd__ClientCredentials__10__CertificateDiskPath="/certs/app.pfx",
        AzureAd__ClientCredentials__10__CertificatePassword="pfx-pass",
        DownstreamApis__graph__BaseUrl="https://graph.microsoft.com/v1.0/",
        DownstreamApis__graph__Scopes__0="User.Read",
        DownstreamApis__graph__Scopes__1="Mail.Read",
        DownstreamApis__weather__BaseUrl="https://weather.example.com",
        DownstreamApis__weather__Scopes="api://weather/.default",
        DownstreamApis__weather__RequestAppToken="true",
        DownstreamApis__weather__RelativePath="forecast",
        DownstreamApis__weather__HttpMethod="post",
        DownstreamApis__weather__ExtraHeaderParameters__X_Custom="1",
        Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated="true",
        TokenCache__RedisConnection="cache.internal:6380,password=p@ss,ssl=true",
    )
    config = EntraConfig.from_env(env)
    assert config.audiences == ("api://weather", "api://other")
    assert config.clock_skew == 120
    assert dict(config.extra_query_parameters) == {"appid": CLIENT}
    assert config.metadata_url().endswith(f"openid-configuration?appid={CLIENT}")
    kinds = [type(c) for c in config.credentials]
    assert kinds == [SignedAssertionFile, ClientSecret, ManagedIdentityAssertion, CertificateCredential]
    mi = config.credentials[2]
    assert isinstance(mi, ManagedIdentityAssertion) and mi.client_id == "mi-client"
    graph = config.downstream_apis["graph"]
    assert graph.scopes == ("User.Read", "Mail.Read")
    assert not graph.request_app_token
    weather = config.downstream_apis["weather"]
    assert weather.scopes == ("api://weather/.default",)
    assert weather.request_app_token
    assert weather.http_method == "POST"
    assert weather.relative_path == "forecast"
    assert dict(weather.extra_headers) == {"X_Custom": "1"}
    assert config.redis_url == "rediss://:p%40ss@cache.internal:6380/0"
    assert config.sidecar_options["AllowOverrides:GetAuthorizationHeaderUnauthenticated"] == "true"


def test_from_env_is_case_insensitive_and_accepts_colons() -> None:
    env = {"azuread:tenantid": TENANT, "AZUREAD__CLIENTID": CLIENT}
    config = EntraConfig.from_env(env)
    assert config.tenant_id == TENANT and config.client_id == CLIENT


def test_from_env_authority() -> None:
    env = {"AzureAd__Authority": f"https://login.microsoftonline.us/{TENANT}/v2.0", "AzureAd__ClientId": CLIENT}
    config = EntraConfig.from_env(env)
    assert config.instance == "https://login.microsoftonline.us/"
    assert config.tenant_id == TENANT
    with pytest.raises(ConfigurationError, match="not both"):
        EntraConfig.from_env({**env, "AzureAd__TenantId": TENANT})


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"AzureAd__ClientId": CLIENT}, "AzureAd__TenantId"),
        ({"AzureAd__TenantId": TENANT}, "AzureAd__ClientId"),
        (base_env(AzureAd__ClientCredentials__0__SourceType="KeyVault"), "AzureAd__ClientCredentials__0__SourceType"),
        (
            base_env(AzureAd__ClientCredentials__0__SourceType="StoreWithThumbprint"),
            "AzureAd__ClientCredentials__0__SourceType",
        ),
        (base_env(AzureAd__ClientCredentials__0__SourceType="Bogus"), "AzureAd__ClientCredentials__0__SourceType"),
        (
            base_env(AzureAd__ClientCredentials__0__SourceType="ClientSecret"),
            "AzureAd__ClientCredentials__0__ClientSecret",
        ),
        (
            base_env(AzureAd__ClientCredentials__0__SourceType="Path"),
            "AzureAd__ClientCredentials__0__CertificateDiskPath",
        ),
        (base_env(DownstreamApis__graph__BaseUrl="graph.microsoft.com"), "DownstreamApis__graph__BaseUrl"),
        (base_env(AzureAd__SendX5C="maybe"), "AzureAd__SendX5C"),
        (
            base_env(AzureAd__TokenValidationParameters__ClockSkew="soon"),
            "AzureAd__TokenValidationParameters__ClockSkew",
        ),
    ],
)
def test_from_env_errors_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        EntraConfig.from_env(env)
    assert info.value.key == key
    assert key.split("__")[-1] in str(info.value) or "KeyVault" in str(info.value) or "store" in str(info.value).lower()


@pytest.mark.parametrize("env", [{}, {"AzureAd__TenantId": ""}, {"DownstreamApis__graph__Scopes": "User.Read"}])
def test_from_env_without_any_azuread_variable_says_to_load_them(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        EntraConfig.from_env(env)
    assert info.value.key == "AzureAd__TenantId"
    message = str(info.value)
    assert "no AzureAd__* variables are set" in message
    assert "AzureAd__TenantId and AzureAd__ClientId" in message and "entra-mw emulator" in message
    assert "\n" not in message


def test_unsupported_sources_say_what_to_use_instead() -> None:
    with pytest.raises(ConfigurationError, match="Base64Encoded"):
        EntraConfig.from_env(base_env(AzureAd__ClientCredentials__0__SourceType="StoreWithThumbprint"))


def test_skipped_credentials_are_ignored() -> None:
    env = base_env(
        AzureAd__ClientCredentials__0__SourceType="KeyVault",
        AzureAd__ClientCredentials__0__Skip="true",
        AzureAd__ClientCredentials__1__SourceType="ClientSecret",
        AzureAd__ClientCredentials__1__ClientSecret="x",
    )
    assert [type(c) for c in EntraConfig.from_env(env).credentials] == [ClientSecret]


def test_from_mapping() -> None:
    config = EntraConfig.from_mapping(
        {
            "TENANT_ID": TENANT,
            "client_id": CLIENT,
            "audiences": ["api://weather"],
            "credentials": [{"client_secret": "x"}, {"SourceType": "SignedAssertionFilePath"}],
            "downstream_apis": {"graph": {"base_url": "https://graph.microsoft.com/v1.0", "scopes": ["User.Read"]}},
        }
    )
    assert config.audiences == ("api://weather",)
    assert [type(c) for c in config.credentials] == [ClientSecret, SignedAssertionFile]
    assert config.downstream_apis["graph"].scopes == ("User.Read",)
    with pytest.raises(ConfigurationError, match="unknown configuration key"):
        EntraConfig.from_mapping({"tenant_id": TENANT, "client_id": CLIENT, "tenant": "x"})
    with pytest.raises(ConfigurationError):
        EntraConfig.from_mapping({"tenant_id": TENANT, "client_id": CLIENT, "downstream_apis": {"g": {"nope": 1}}})


@pytest.mark.parametrize(
    "base_url",
    ["ftp://x", "https://", "https://h/?q=1", "https://user:pw@h/", "https://h/#frag", "/relative"],
)
def test_downstream_api_rejects_bad_base_urls(base_url: str) -> None:
    with pytest.raises(ConfigurationError):
        DownstreamApi(base_url=base_url)


def test_an_api_without_base_url_is_for_authorization_headers_only() -> None:
    # The official sidecar's BaseUrl defaults to null (spec §2.3): a token-only API, e.g. one app-only for the
    # exchange audience, is configured with scopes alone.
    config = EntraConfig.from_env(
        base_env(
            DownstreamApis__exchange__Scopes__0="api://AzureADTokenExchange/.default",
            DownstreamApis__exchange__RequestAppToken="true",
        )
    )
    api = config.downstream_apis["exchange"]
    assert api.base_url == ""
    assert api.scopes == ("api://AzureADTokenExchange/.default",)
    assert api.request_app_token
    with pytest.raises(ConfigurationError):
        DownstreamApi(base_url=None)  # type: ignore[arg-type]


def test_downstream_api_bad_method() -> None:
    with pytest.raises(ConfigurationError, match="http_method"):
        DownstreamApi(base_url="https://h/", http_method="BREW")


def test_credentials_validate_themselves() -> None:
    with pytest.raises(ConfigurationError):
        ClientSecret("")
    with pytest.raises(ConfigurationError, match="exactly one"):
        CertificateCredential()
    with pytest.raises(ConfigurationError, match="exactly one"):
        CertificateCredential(path="a", pem="b")
    assert "pw" not in repr(CertificateCredential(path="a.pfx", password="pw"))
    with pytest.raises(ConfigurationError, match="AZURE_FEDERATED_TOKEN_FILE"):
        SignedAssertionFile().resolve_path({})
    assert SignedAssertionFile().resolve_path({"AZURE_FEDERATED_TOKEN_FILE": "/var/run/t"}) == "/var/run/t"


def test_allowed_tenants_must_be_guids() -> None:
    with pytest.raises(ConfigurationError, match="GUIDs") as info:
        EntraConfig(tenant_id="common", client_id=CLIENT, allowed_tenants=["contoso.onmicrosoft.com"])
    assert info.value.key == "allowed_tenants"
    config = EntraConfig(tenant_id="organizations", client_id=CLIENT, allowed_tenants=[TENANT.upper()])
    assert config.allowed_tenants == (TENANT,)


def test_authority_with_an_encoded_query_is_encoded_once() -> None:
    env = {
        "AzureAd__Authority": f"https://login.microsoftonline.com/{TENANT}?appid=a%2Fb&x=1",
        "AzureAd__ClientId": CLIENT,
    }
    config = EntraConfig.from_env(env)
    assert dict(config.extra_query_parameters) == {"appid": "a/b", "x": "1"}
    assert config.metadata_url().endswith("/v2.0/.well-known/openid-configuration?appid=a%2Fb&x=1")


@pytest.mark.parametrize(
    ("variable", "intended"),
    [
        ("AzureAd__ClientSecrt", "AzureAd__ClientSecret"),
        ("AzureAd__TenantID_", "AzureAd__TenantId"),
        ("AzureAd:Instanse", "AzureAd:Instance"),
        ("DownstreamApis__graph__BaseUrll", "DownstreamApis__graph__BaseUrl"),
        ("DownstreamApis__graph__RequestAppTokn", "DownstreamApis__graph__RequestAppToken"),
        ("AzureAd__ClientCredentials__0__ClientSecrett", "AzureAd__ClientCredentials__0__ClientSecret"),
    ],
)
def test_a_misspelt_key_is_refused_with_the_intended_one(variable: str, intended: str) -> None:
    env = base_env(
        DownstreamApis__graph__BaseUrl="https://graph.microsoft.com/v1.0/",
        AzureAd__ClientCredentials__0__SourceType="ClientSecret",
        AzureAd__ClientCredentials__0__ClientSecret="s",
    )
    env[variable] = "x"
    with pytest.raises(ConfigurationError) as info:
        EntraConfig.from_env(env)
    assert info.value.key == variable
    assert variable in str(info.value) and intended in str(info.value)


def test_unknown_and_unused_keys_are_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="entra_mw.config")
    env = base_env(AzureAd__CallbackPath="/signin-oidc", AzureAd__SomethingElseEntirely="1")
    EntraConfig.from_env(env)
    messages = [r.getMessage() for r in caplog.records]
    assert any("AzureAd__SomethingElseEntirely" in m and "not known" in m for m in messages)
    assert any("AzureAd__CallbackPath" in m and "not used" in m for m in messages)
    assert all("secret" not in m.lower() for m in messages)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AZUREAD__TENANTID", "not a tenant!"), ("azuread:clientid", "my-app"), ("AzureAd__Instance", "ftp://x/")],
)
def test_value_errors_name_the_variable_as_written(variable: str, value: str) -> None:
    env = base_env()
    canonical = {"azuread__tenantid": "AzureAd__TenantId", "azuread:clientid": "AzureAd__ClientId"}.get(
        variable.lower(), variable
    )
    env.pop(canonical, None)
    env[variable] = value
    with pytest.raises(ConfigurationError) as info:
        EntraConfig.from_env(env)
    assert info.value.key == variable
    assert variable in str(info.value)


@pytest.mark.parametrize("client_id", ["my-app", "api://weather", "{11111111-2222-3333-4444-555555555555}", "1" * 32])
def test_client_id_must_be_a_guid(client_id: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        EntraConfig(tenant_id=TENANT, client_id=client_id)
    assert info.value.key == "client_id"
