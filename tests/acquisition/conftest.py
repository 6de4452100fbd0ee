from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from entra_mw import ClientSecret, EntraConfig
from entra_mw._acquisition.engine import Acquirer
from entra_mw._http import HttpSeam
from entra_mw.testing import FakeClock, FakeEntra, Scenario
from tests._redis import RedisServer, private_redis

AcquirerFactory = Callable[..., Acquirer]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def scn(fake_entra: FakeEntra) -> Scenario:
    return fake_entra.quickstart()


@pytest.fixture
def make_acquirer(fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario) -> Iterator[AcquirerFactory]:
    """Builds ``Acquirer``s for the quickstart blueprint: ``config`` are ``EntraConfig`` fields (the blueprint's
    secret unless ``credentials`` is given), ``transport`` replaces FakeEntra's. Each is closed, with its HTTP
    pool, at the end."""
    built: list[tuple[Acquirer, HttpSeam]] = []

    def make(*, transport: httpx2.BaseTransport | None = None, **config: Any) -> Acquirer:
        config.setdefault("credentials", (ClientSecret(scn.blueprint_secret),))
        seam = HttpSeam(transport=transport or fake_entra.transport)
        acquirer = Acquirer(
            EntraConfig(tenant_id=scn.tenant.tenant_id, client_id=scn.blueprint.app_id, **config), seam, fake_clock
        )
        built.append((acquirer, seam))
        return acquirer

    yield make
    for acquirer, seam in built:
        acquirer.close()
        seam.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private ``redis-server`` the test may stop and start again; stopped at the end."""
    missing = "redis-server is not installed (a private server is needed to simulate an outage)"
    with private_redis(tmp_path, missing=missing) as server:
        yield server


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis to talk to: ``REDIS_URL`` when set, else a private ``redis-server``; skipped (or failed, with
    ``ENTRA_MW_REQUIRE_REDIS=1``) when neither is available."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with private_redis(tmp_path, missing="neither REDIS_URL nor redis-server is available") as server:
        yield server.url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own, so tests sharing one Redis (``REDIS_URL``) never meet; its keys are
    deleted at the end."""
    prefix = f"entra_mw_test:{uuid.uuid4().hex}:"
    yield prefix
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # the test stopped its server
    finally:
        client.close()
