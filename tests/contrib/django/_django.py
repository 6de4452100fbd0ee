"""Django is configured once per test process (settings are global); tests change what they need with
``override_settings``, which is exactly what the integration must honour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import django
from django.conf import settings

from entra_mw import EntraAuth, EntraConfig
from entra_mw.testing import App, FakeEntra, Scenario

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["entra_mw.contrib.django.rest_framework.EntraAuthentication"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
}


def configure() -> None:
    if settings.configured:
        return
    settings.configure(
        SECRET_KEY="entra-mw-tests",
        DEBUG=False,
        ALLOWED_HOSTS=["testserver", "127.0.0.1", "localhost"],
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "entra_mw.contrib.django",
        ],
        MIDDLEWARE=["entra_mw.contrib.django.EntraMiddleware"],
        ROOT_URLCONF="tests.contrib.django.urls",
        DATABASES={},  # any database access would fail: the integration must need none
        USE_TZ=True,
        REST_FRAMEWORK=REST_FRAMEWORK,
    )
    django.setup()


@dataclass
class World:
    """FakeEntra's quickstart plus what On-Behalf-Of needs: the weather API's secret and a forecast API it may
    call for its users. ``factory`` builds engines on FakeEntra's in-process transports (``ENTRA_MW_AUTH_FACTORY``)
    and remembers them."""

    fake: FakeEntra
    s: Scenario
    forecast: App
    api_secret: str = field(repr=False)
    built: list[EntraAuth] = field(default_factory=list)

    def factory(self, config: EntraConfig) -> EntraAuth:
        auth = EntraAuth(
            config,
            transport=self.fake.transport,
            async_transport=self.fake.async_transport,
            clock=self.fake.clock,
        )
        self.built.append(auth)
        return auth

    def setting(self) -> dict[str, object]:
        return {
            "tenant_id": self.s.tenant.tenant_id,
            "client_id": self.s.api.app_id,
            "credentials": [{"client_secret": self.api_secret}],
            "downstream_apis": {
                "forecast": {
                    "base_url": "https://forecast.example/",
                    "scopes": [f"{self.forecast.identifier_uris[0]}/Forecast.Read"],
                }
            },
        }

    def user_token(self, **kw: Any) -> str:
        kw.setdefault("scopes", ["Weather.Read"])
        return self.fake.user_token(self.s.user, client=self.s.client, resource=self.s.api, **kw)

    def app_token(self) -> str:
        return self.fake.app_token(self.s.client, resource=self.s.api)


def world(fake: FakeEntra) -> World:
    s = fake.quickstart()
    secret = fake.add_secret(s.api)
    forecast = fake.add_app(s.tenant, display_name="forecast-api", scopes=("Forecast.Read",))
    fake.grant_consent(s.api, forecast, ["Forecast.Read"])
    return World(fake=fake, s=s, forecast=forecast, api_secret=secret)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


Factory = Callable[[EntraConfig], EntraAuth]
