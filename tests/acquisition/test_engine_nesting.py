"""A token endpoint answering deeply nested JSON is a malformed answer, never an escaping ``RecursionError``."""

from __future__ import annotations

import pytest

from entra_mw import ClientSecret, EntraConfig
from entra_mw._acquisition._types import TokenRequest
from entra_mw._acquisition.engine import Acquirer
from entra_mw._http import HttpSeam
from entra_mw.errors import TokenAcquisitionError
from entra_mw.testing import FakeClock, FakeEntra


@pytest.mark.parametrize("status", [200, 400, 500])
def test_deeply_nested_answer_is_malformed(fake_entra: FakeEntra, fake_clock: FakeClock, status: int) -> None:
    scn = fake_entra.quickstart()
    config = EntraConfig(
        tenant_id=scn.tenant.tenant_id,
        client_id=scn.blueprint.app_id,
        credentials=[ClientSecret(scn.blueprint_secret)],
        token_request_retries=0,
    )
    acquirer = Acquirer(config, HttpSeam(transport=fake_entra.transport), fake_clock)
    fake_entra.faults.garbage("token", body=b"[" * 15_000, status=status)
    request = TokenRequest(
        flow="app",
        scopes=(scn.api.identifier_uris[0] + "/.default",),
        client_id=scn.blueprint.app_id,
        tenant=scn.tenant.tenant_id,
    )
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(request)
    assert info.value.status_code in (502, 503)
    assert fake_entra.request_count("token") == 1
