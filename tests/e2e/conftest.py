"""The local tenant the weather examples' e2e tests run against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from example_apps._local import LocalTenant


@pytest.fixture
def tenant() -> Iterator[LocalTenant]:
    """FakeEntra served over HTTPS with the weather API, its provider and the running provider; closed after."""
    tenant = LocalTenant.start()
    yield tenant
    tenant.close()
