from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from entra_mw import ClientSecret, EntraAuth, EntraConfig, WebSignIn
from entra_mw.testing import App, FakeClock, FakeEntra, Scenario

REDIRECT = "http://localhost/auth/callback"


@dataclass
class Site:
    """A web app registered in FakeEntra (redirect URIs on loopback, a secret), its engine and its sign-in."""

    fake: FakeEntra
    s: Scenario
    web: App
    auth: EntraAuth
    signin: WebSignIn

    @property
    def api_scope(self) -> str:
        return f"{self.s.api.identifier_uris[0]}/Weather.Read"

    def sign_in(self, url: str, *, consent: bool = True) -> dict[str, str]:
        return self.fake.sign_in(url, username=self.s.user.upn, password=self.s.user_password, consent=consent)


def make_site(fake: FakeEntra, clock: FakeClock, **kw: object) -> Site:
    s = fake.quickstart()
    web = fake.add_app(s.tenant, display_name="weather-web", redirect_uris=[REDIRECT, "http://localhost/"])
    secret = fake.add_secret(web)
    auth = EntraAuth(
        EntraConfig(tenant_id=s.tenant.tenant_id, client_id=web.app_id, credentials=[ClientSecret(secret)]),
        transport=fake.transport,
        async_transport=fake.async_transport,
        clock=clock,
    )
    scope = f"{s.api.identifier_uris[0]}/Weather.Read"
    return Site(fake=fake, s=s, web=web, auth=auth, signin=WebSignIn(auth, scopes=[scope], **kw))  # type: ignore[arg-type]


@pytest.fixture
def site(fake_entra: FakeEntra, fake_clock: FakeClock) -> Iterator[Site]:
    made = make_site(fake_entra, fake_clock)
    with made.auth:
        yield made
