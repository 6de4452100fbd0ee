"""Settings are read at use time: ``override_settings`` swaps the engine (and closes the old one); ``"env"``
reads the sidecar's variables; ``ENTRA_MW_AUTH_FACTORY`` takes a callable or a dotted path."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client, override_settings

from entra_mw import ConfigurationError, EntraAuth, EntraConfig
from entra_mw.contrib.django.conf import get_auth, get_user_sync

from ._django import World, bearer

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "11111111-2222-3333-4444-555555555555"
OTHER = "22222222-3333-4444-5555-666666666666"


def test_engine_is_built_lazily_and_kept() -> None:
    with override_settings(ENTRA_MW={"tenant_id": TENANT, "client_id": CLIENT}):
        auth = get_auth()
        assert auth is get_auth()
        assert auth.config.client_id == CLIENT
        with override_settings(ENTRA_MW={"tenant_id": TENANT, "client_id": OTHER}):
            assert get_auth().config.client_id == OTHER
        # Leaving the override changes the setting back: a new engine from the outer value.
        again = get_auth()
        assert again is not auth
        assert again.config.client_id == CLIENT


def test_replaced_engines_are_closed() -> None:
    with override_settings(ENTRA_MW={"tenant_id": TENANT, "client_id": CLIENT}):
        auth = get_auth()
        client = auth._http.client  # opens the pooled client
        assert not client.is_closed
    assert client.is_closed


def test_an_entra_config_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(ENTRA_MW=EntraConfig(tenant_id=TENANT, client_id=CLIENT)):
        assert get_auth().config.client_id == CLIENT
    monkeypatch.setenv("AzureAd__TenantId", TENANT)
    monkeypatch.setenv("AzureAd__ClientId", OTHER)
    with override_settings(ENTRA_MW="env"):
        assert get_auth().config.client_id == OTHER


def test_factory_callable_and_dotted_path() -> None:
    made: list[EntraConfig] = []

    def factory(config: EntraConfig) -> EntraAuth:
        made.append(config)
        return EntraAuth(config)

    with override_settings(ENTRA_MW={"tenant_id": TENANT, "client_id": CLIENT}, ENTRA_MW_AUTH_FACTORY=factory):
        get_auth()
        assert [c.client_id for c in made] == [CLIENT]
    path = "tests.contrib.django.factories.build_auth"
    with override_settings(ENTRA_MW={"tenant_id": TENANT, "client_id": CLIENT}, ENTRA_MW_AUTH_FACTORY=path):
        assert get_auth().clock.time() == 1_234_567
    path = "tests.contrib.django.factories.not_an_engine"
    with override_settings(ENTRA_MW={"tenant_id": TENANT, "client_id": CLIENT}, ENTRA_MW_AUTH_FACTORY=path):
        with pytest.raises(ConfigurationError, match="not an EntraAuth"):
            get_auth()


def test_missing_setting_names_it() -> None:
    assert getattr(settings, "ENTRA_MW", None) is None
    with pytest.raises(ConfigurationError, match="ENTRA_MW is not set"):
        get_auth()


def test_user_sync_setting_is_lazy_too() -> None:
    assert get_user_sync() is None
    with override_settings(ENTRA_MW_USER_SYNC="tests.contrib.django.factories.sync_user"):
        hook = get_user_sync()
        assert hook is not None and hook.__name__ == "sync_user"
    assert get_user_sync() is None


def test_requests_follow_override_settings(env: World) -> None:
    """A token for the weather API stops working when the setting names another API, then works again."""
    token = env.user_token()
    assert Client().get("/sync", headers=bearer(token)).status_code == 200
    with override_settings(ENTRA_MW={**env.setting(), "client_id": OTHER}):
        response = Client().get("/sync", headers=bearer(token))
        assert response.status_code == 401
        assert "audience" in response["WWW-Authenticate"].lower() or "invalid_token" in response["WWW-Authenticate"]
    assert Client().get("/sync", headers=bearer(token)).status_code == 200
