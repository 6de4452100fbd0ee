"""One engine used from several asyncio event loops (async views under WSGI get a new loop per request; scripts
call ``asyncio.run`` twice): each loop gets its own pooled client, closed when that loop shuts down."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from entra_mw import EntraAuth, EntraConfig
from entra_mw.testing import FakeEntra

pytestmark = pytest.mark.loopback


def test_each_loop_has_its_own_client_closed_with_the_loop(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    with fake_entra.serve() as served:
        auth = EntraAuth(
            EntraConfig(tenant_id=s.tenant.tenant_id, client_id=s.api.app_id, instance=served.base_url),
            verify=served.ca_file,
            clock=fake_entra.clock,
        )
        token = fake_entra.user_token(s.user, client=s.client, resource=s.api, scopes=["Weather.Read"])
        clients: list[httpx2.AsyncClient] = []

        async def use() -> None:
            await auth.astartup()  # real connections to the served FakeEntra, kept alive in the pool
            assert (await auth.avalidate(token)).oid == s.user.object_id
            clients.append(auth._http.aclient)
            assert auth._http.aclient is clients[-1]

        for _ in range(3):
            asyncio.run(use())
        assert len({id(c) for c in clients}) == 3
        assert all(c.is_closed for c in clients)
        assert fake_entra.request_count("jwks") >= 3

        async def use_and_close() -> None:
            await auth.astartup()
            client = auth._http.aclient
            await auth.aclose()
            assert client.is_closed

        asyncio.run(use_and_close())
        auth.close()
