from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from entra_mw import ClientSecret, DownstreamApi, EntraAuth, EntraConfig
from entra_mw.testing import App, FakeClock, FakeEntra, Scenario

RESOURCE = "https://mcp.contoso.com/mcp"


@dataclass
class McpEnv:
    """The quickstart tenant plus an MCP server app whose App ID URI is ``RESOURCE`` (scopes ``Tools.Use`` and
    ``Forecast.Read``, app role ``Tools.All``), and an engine for it on FakeEntra's in-process transports."""

    fake: FakeEntra
    scn: Scenario
    server: App
    auth: EntraAuth

    def user_token(self, *scopes: str, **kw: object) -> str:
        return self.fake.user_token(
            self.scn.user, client=self.scn.client, resource=self.server, scopes=list(scopes) or None, **kw
        )

    def engine(self, **overrides: object) -> EntraAuth:
        options: dict[str, object] = {
            "tenant_id": self.scn.tenant.tenant_id,
            "client_id": self.server.app_id,
            "audiences": (RESOURCE,),
        }
        options.update(overrides)
        return EntraAuth(
            EntraConfig(**options),  # type: ignore[arg-type]
            transport=self.fake.transport,
            async_transport=self.fake.async_transport,
            clock=self.fake.clock,
        )


@pytest.fixture
def env(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[McpEnv]:
    scn = fake_entra.quickstart()
    server = fake_entra.add_app(
        scn.tenant,
        display_name="contoso-mcp",
        identifier_uris=[RESOURCE],
        scopes=("Tools.Use", "Forecast.Read"),
        app_roles=("Tools.All",),
    )
    secret = fake_entra.add_secret(server)
    fake_entra.grant_consent(server, scn.api, scn.api.scopes)
    fake_entra.grant_consent(scn.client, server, server.scopes)
    fake_entra.grant_app_roles(scn.client, server, ["Tools.All"])
    auth = EntraAuth(
        EntraConfig(
            tenant_id=scn.tenant.tenant_id,
            client_id=server.app_id,
            audiences=(RESOURCE,),
            credentials=[ClientSecret(secret)],
            downstream_apis={
                "weather": DownstreamApi(
                    base_url="https://weather.contoso.com/", scopes=(f"{scn.api.identifier_uris[0]}/Weather.Read",)
                )
            },
        ),
        transport=fake_entra.transport,
        async_transport=fake_entra.async_transport,
        clock=fake_clock,
    )
    try:
        yield McpEnv(fake=fake_entra, scn=scn, server=server, auth=auth)
    finally:
        auth.close()
