from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._redis import RedisServer, no_redis, redis_server_binary


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private ``redis-server`` the test may stop and start again; stopped at the end."""
    binary = redis_server_binary()
    if binary is None:
        no_redis("redis-server is not installed (a private server is needed to simulate an outage)")
    server = RedisServer(binary, tmp_path)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        no_redis(f"redis-server could not be started: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis to talk to: ``REDIS_URL`` when set, else a private ``redis-server``; skipped (or failed, with
    ``ENTRA_MW_REQUIRE_REDIS=1``) when neither is available."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    binary = redis_server_binary()
    if binary is None:
        no_redis("neither REDIS_URL nor redis-server is available")
    server = RedisServer(binary, tmp_path)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        no_redis(f"redis-server could not be started: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


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
