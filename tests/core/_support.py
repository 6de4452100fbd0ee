"""Helpers shared by the validation tests (the ``make_auth`` and ``auth`` fixtures live in ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from entra_mw import EntraAuth, InvalidToken
from entra_mw.testing import FakeEntra

MakeAuth = Callable[..., EntraAuth]


def reason(auth: EntraAuth, token: Any) -> str:
    """The reason code ``auth`` refuses ``token`` with (a 401 ``InvalidToken``)."""
    with pytest.raises(InvalidToken) as info:
        auth.validate(token)
    assert info.value.status_code == 401
    return info.value.reason


def good_claims(fake: FakeEntra) -> dict[str, Any]:
    """The claims of a valid app token for the quickstart API, to tamper with and re-sign."""
    s = fake.quickstart()
    return fake.decode(fake.app_token(s.client, resource=s.api))
