"""System checks: each id, registered by the app config and run by ``manage.py check``."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from entra_mw import EntraConfig
from entra_mw.contrib.django.checks import check_settings

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "11111111-2222-3333-4444-555555555555"
GOOD = {"tenant_id": TENANT, "client_id": CLIENT}


def ids() -> list[str]:
    return [m.id or "" for m in check_settings()]


def test_valid_settings_pass() -> None:
    with override_settings(ENTRA_MW=GOOD):
        assert check_settings() == []
    with override_settings(ENTRA_MW=EntraConfig(tenant_id=TENANT, client_id=CLIENT)):
        assert check_settings() == []
    with override_settings(
        ENTRA_MW=GOOD, ENTRA_MW_AUTH_FACTORY="entra_mw.EntraAuth", ENTRA_MW_USER_SYNC="builtins.repr"
    ):
        assert check_settings() == []


def test_e001_missing() -> None:
    with override_settings(ENTRA_MW=None):
        [message] = check_settings()
    assert message.id == "entra_mw.E001"
    assert message.hint is not None and '"env"' in message.hint


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (42, "not int"),
        ("nonsense", "nonsense"),
        ({"tenant_id": TENANT}, "client_id"),
        ({**GOOD, "tenant": "x"}, "'tenant'"),
        ({**GOOD, "clock_skew": -5}, "clock_skew"),
    ],
)
def test_e002_invalid(value: object, needle: str) -> None:
    with override_settings(ENTRA_MW=value):
        [message] = check_settings()
    assert message.id == "entra_mw.E002"
    assert needle in message.msg
    assert message.hint


def test_e002_env_without_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AzureAd__TenantId", "AzureAd__ClientId", "AzureAd__Instance"):
        monkeypatch.delenv(name, raising=False)
    with override_settings(ENTRA_MW="env"):
        [message] = check_settings()
    assert message.id == "entra_mw.E002"
    assert "no AzureAd__* variables are set" in message.msg
    # The hint says where "env" reads from, not to set ENTRA_MW = "env", which is already the case.
    assert message.hint is not None and "environment of the Django process" in message.hint
    assert 'or ENTRA_MW = "env"' not in message.hint
    monkeypatch.setenv("AzureAd__TenantId", TENANT)
    monkeypatch.setenv("AzureAd__ClientId", CLIENT)
    with override_settings(ENTRA_MW="env"):
        assert ids() == []


@pytest.mark.parametrize("value", ["no_such_module_xyz.build", "entra_mw.no_such_name", "nodots", 42])
def test_e003_factory(value: object) -> None:
    with override_settings(ENTRA_MW=GOOD, ENTRA_MW_AUTH_FACTORY=value):
        [message] = check_settings()
    assert message.id == "entra_mw.E003"
    assert "ENTRA_MW_AUTH_FACTORY" in message.msg


def test_e004_user_sync() -> None:
    with override_settings(ENTRA_MW=GOOD, ENTRA_MW_USER_SYNC="entra_mw.__version__"):
        [message] = check_settings()
    assert message.id == "entra_mw.E004"
    assert "ENTRA_MW_USER_SYNC" in message.msg


def test_registered_when_the_app_is_ready() -> None:
    with override_settings(ENTRA_MW=None, ENTRA_MW_AUTH_FACTORY="x.y"):
        found = sorted(m.id or "" for m in run_checks() if (m.id or "").startswith("entra_mw."))
    assert found == ["entra_mw.E001", "entra_mw.E003"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENTRA_MW_REQUIRED", "yes"),
        ("ENTRA_MW_EXCLUDE_PATHS", ["healthz"]),
        ("ENTRA_MW_EXCLUDE_PATHS", ["/a*/b"]),
        ("ENTRA_MW_EXCLUDE_PATHS", 42),
    ],
)
def test_e005_middleware_settings(name: str, value: object) -> None:
    with override_settings(ENTRA_MW=GOOD, **{name: value}):
        [message] = check_settings()
    assert message.id == "entra_mw.E005"
    assert name in message.msg
    assert message.hint


def test_w001_before_cors() -> None:
    cors = "corsheaders.middleware.CorsMiddleware"
    ours = "entra_mw.contrib.django.EntraMiddleware"
    with override_settings(ENTRA_MW=GOOD, MIDDLEWARE=[ours, cors]):
        [message] = check_settings()
    assert message.id == "entra_mw.W001"
    assert message.hint is not None and cors in message.hint
    with override_settings(ENTRA_MW=GOOD, MIDDLEWARE=[cors, "entra_mw.contrib.django.middleware.EntraMiddleware"]):
        assert check_settings() == []
    with override_settings(ENTRA_MW=GOOD, MIDDLEWARE=[]):
        assert check_settings() == []
