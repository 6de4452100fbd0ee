"""Shared by the framework adapter tests: FakeEntra with a downstream "provider" API answered in process, and an
engine that counts its validations."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

from entra_mw import DownstreamApi, EntraAuth, EntraConfig, Principal
from entra_mw.testing import App, FakeEntra, Scenario
from tests.acquisition._routing import RoutingTransport

PROVIDER_HOST = "provider.test"


class CountingAuth(EntraAuth):
    """A real engine that counts how often a token is validated (to prove nothing is validated twice)."""

    def __init__(self, config: EntraConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.validations = 0
        self.closed = 0

    def validate(self, token: str) -> Principal:
        self.validations += 1
        return super().validate(token)

    async def avalidate(self, token: str) -> Principal:
        self.validations += 1
        return await super().avalidate(token)

    def close(self) -> None:
        self.closed += 1
        super().close()

    async def aclose(self) -> None:
        self.closed += 1
        await super().aclose()


@dataclass
class Provider:
    """The downstream API: records the Authorization header of each call; ``hook`` may delay an answer."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    hook: Callable[[httpx2.Request], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if self.hook is not None:
            self.hook(request)
        with self.lock:
            self.calls.append((request.url.path, request.headers.get("authorization", "")))
        return httpx2.Response(200, content=json.dumps({"path": request.url.path}).encode())


@dataclass
class Env:
    fake: FakeEntra
    scn: Scenario
    provider_app: App
    provider: Provider
    transport: RoutingTransport
    settings: dict[str, Any]

    def config(self) -> EntraConfig:
        return EntraConfig.from_mapping(self.settings)

    def auth(self, config: EntraConfig | None = None) -> CountingAuth:
        return CountingAuth(
            config or self.config(), transport=self.transport, async_transport=self.transport, clock=self.fake.clock
        )

    def user_token(self, **kw: Any) -> str:
        return self.fake.user_token(self.scn.user, client=self.scn.client, resource=self.scn.api, **kw)

    def app_token(self, **kw: Any) -> str:
        return self.fake.app_token(self.scn.client, resource=self.scn.api, **kw)

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def make_env(fake: FakeEntra) -> Env:
    """The quickstart weather API with a secret, allowed to call the provider (scope Forecast.Read) for users."""
    scn = fake.quickstart()
    secret = fake.add_secret(scn.api)
    provider_app = fake.add_app(scn.tenant, display_name="forecast-provider", scopes=("Forecast.Read",))
    fake.grant_consent(scn.api, provider_app, provider_app.scopes)
    provider = Provider()
    transport = RoutingTransport(
        {PROVIDER_HOST: provider}, fallback=fake.transport, afallback=fake.async_transport
    )
    settings = {
        "tenant_id": scn.tenant.tenant_id,
        "client_id": scn.api.app_id,
        "credentials": [{"client_secret": secret}],
        "downstream_apis": {
            "provider": DownstreamApi(
                base_url=f"https://{PROVIDER_HOST}/", scopes=(f"api://{provider_app.app_id}/Forecast.Read",)
            )
        },
    }
    return Env(
        fake=fake, scn=scn, provider_app=provider_app, provider=provider, transport=transport, settings=settings
    )

