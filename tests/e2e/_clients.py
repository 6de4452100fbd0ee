"""Helpers for driving real clients (azure-identity, MSAL, entra_mw itself) against a served FakeEntra."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import msal

from entra_mw import EntraAuth, EntraConfig, Principal
from entra_mw.testing import App, FakeEntra, Scenario, ServedFakeEntra

EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"
K8S_ISSUER = "https://oidc.prod-aks.azure.com/0b1f3c6e-aks/cluster-1/"
K8S_SUBJECT = "system:serviceaccount:agents:weather"


@dataclass
class Served:
    """One FakeEntra (system clock: real clients compare ``exp`` with ``time.time()``) served over HTTPS.

    Everything opened through it (MSAL apps, validators) is closed by :meth:`close`.
    """

    fake: FakeEntra
    scn: Scenario
    served: ServedFakeEntra
    stack: ExitStack = field(default_factory=ExitStack)

    @property
    def tid(self) -> str:
        return self.scn.tenant.tenant_id

    @property
    def authority(self) -> str:
        return self.served.base_url + self.tid

    def api_scope(self, name: str = ".default") -> str:
        return f"{self.scn.api.identifier_uris[0]}/{name}"

    def user_token(self, **kw: Any) -> str:
        """Alice's token for the weather API, through the client app."""
        return self.fake.user_token(self.scn.user, client=self.scn.client, resource=self.scn.api, **kw)

    def expired_token(self) -> str:
        """Alice's token for the weather API, expired an hour ago."""
        now = int(self.fake.clock.time())
        return self.user_token(extra_claims={"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})

    def other_tenant_token(self) -> str:
        """A multi-tenant client's user in another tenant: a genuine token for the weather API, issued by that
        tenant."""
        other = self.fake.add_tenant(domain="fabrikam.onmicrosoft.com")
        bob = self.fake.add_user(other, upn="bob@fabrikam.onmicrosoft.com", password="B0b-p@ss")
        return self.fake.user_token(bob, client=self.scn.client, resource=self.scn.api)

    def validator(self, audience_app: App | None = None) -> EntraAuth:
        """entra_mw's validator for ``audience_app`` (default: the weather API), over the network."""
        app = audience_app or self.scn.api
        auth = EntraAuth(
            EntraConfig(tenant_id=self.tid, client_id=app.app_id, instance=self.served.base_url),
            verify=self.served.ca_file,
        )
        self.stack.callback(auth.close)
        return auth

    def validate(self, token: str, audience_app: App | None = None) -> Principal:
        return self.validator(audience_app).validate(token)

    def tc(self) -> str:
        """Tc: alice's token for the blueprint (the API she called), the OBO assertion (spec §3.4)."""
        return self.fake.user_token(
            self.scn.user, client=self.scn.client, resource=self.scn.blueprint, scopes=["access_agent"]
        )

    def cca(self, client_id: str, credential: Any, **kw: Any) -> Any:
        """An MSAL confidential client on MSAL's own ``requests`` session, closed with this object.

        A fresh app per use: MSAL's HTTP cache replays identical 400 answers for 60 s (spec §5.5).
        """
        kw.setdefault("instance_discovery", False)
        app = msal.ConfidentialClientApplication(
            client_id, client_credential=credential, authority=self.authority, **kw
        )
        self.stack.callback(app.http_client.close)
        return app

    def agent_cca(self) -> Any:
        """The agent identity's MSAL app: its client assertion is T1 from the blueprint (spec §3.8)."""
        blueprint = self.cca(self.scn.blueprint.app_id, self.scn.blueprint_secret)

        def t1(context: dict[str, Any]) -> str:
            result = blueprint.acquire_token_for_client([EXCHANGE_SCOPE], fmi_path=context["client_id"])
            token: str = result["access_token"]
            return token

        return self.cca(self.scn.agent.app_id, {"client_assertion": t1})

    def close(self) -> None:
        self.stack.close()
        self.served.close()
        self.fake.close()


def served_fake() -> Iterator[Served]:
    """Fixture body: a served quickstart FakeEntra, closed (server, clients, validators) afterwards."""
    fake = FakeEntra()
    scn = fake.quickstart()
    world = Served(fake=fake, scn=scn, served=fake.serve())
    try:
        yield world
    finally:
        world.close()


def token_of(result: dict[str, Any]) -> str:
    """The access token of an MSAL result, or a failure naming the AADSTS error (never the token)."""
    assert "access_token" in result, (result.get("error"), result.get("error_description"))
    token: str = result["access_token"]
    return token
