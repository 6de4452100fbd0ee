"""Fault injection (outage, 429, 5xx, latency, garbage) and per-endpoint counters, sync and async."""

from __future__ import annotations

import threading
import time

import anyio
import httpx2
import pytest

from entra_mw.testing import FakeEntra

LOGIN = "https://login.microsoftonline.com"
JWKS = f"{LOGIN}/common/discovery/v2.0/keys"
OIDC = f"{LOGIN}/common/v2.0/.well-known/openid-configuration"


def test_one_shot_outage(fake_entra: FakeEntra) -> None:
    fake_entra.faults.outage("jwks", times=1)
    with httpx2.Client(transport=fake_entra.transport) as client:
        with pytest.raises(httpx2.ConnectError):
            client.get(JWKS)
        assert client.get(JWKS).status_code == 200
        assert client.get(OIDC).status_code == 200
    assert fake_entra.request_count("jwks") == 2  # faulted requests count too
    assert fake_entra.request_count("openid_configuration") == 1
    assert fake_entra.faults.rules == ()


def test_persistent_rate_limit_until_cleared(fake_entra: FakeEntra) -> None:
    fake_entra.faults.rate_limit("jwks", retry_after=7)
    with httpx2.Client(transport=fake_entra.transport) as client:
        for _ in range(3):
            r = client.get(JWKS)
            assert r.status_code == 429
            assert r.headers["retry-after"] == "7"
            assert r.json()["error"] == "temporarily_unavailable"
        assert client.get(OIDC).status_code == 200
        fake_entra.faults.clear()
        assert client.get(JWKS).status_code == 200


def test_server_error_and_garbage(fake_entra: FakeEntra) -> None:
    fake_entra.faults.server_error("openid_configuration", 502, retry_after=1, times=1)
    fake_entra.faults.garbage("jwks", times=1)
    with httpx2.Client(transport=fake_entra.transport) as client:
        r = client.get(OIDC)
        assert r.status_code == 502
        assert r.headers["retry-after"] == "1"
        g = client.get(JWKS)
        assert g.status_code == 200
        with pytest.raises(ValueError, match=r"."):
            g.json()
        assert client.get(JWKS).json()["keys"]


def test_latency_uses_real_time(fake_entra: FakeEntra) -> None:
    fake_entra.faults.latency("discovery", 0.05, times=1)
    with httpx2.Client(transport=fake_entra.transport) as client:
        start = time.monotonic()
        assert client.get(OIDC).status_code == 200
        assert time.monotonic() - start >= 0.05
    # "discovery" expands to both discovery endpoints; the instance-discovery rule is still pending.
    assert [r.endpoint for r in fake_entra.faults.rules] == ["instance_discovery"]


def test_wildcard_remove_and_headers(fake_entra: FakeEntra) -> None:
    rules = fake_entra.faults.set("*", status=503)
    hdr = fake_entra.faults.set("jwks", headers={"X-Test": "1"})
    with httpx2.Client(transport=fake_entra.transport) as client:
        assert client.get(OIDC).status_code == 503
        assert client.get(JWKS).status_code == 503
        fake_entra.faults.remove(rules)
        r = client.get(JWKS)
        assert r.status_code == 200
        assert r.headers["x-test"] == "1"
        fake_entra.faults.remove(hdr)
        assert "x-test" not in client.get(JWKS).headers


def test_unknown_endpoint_names_are_rejected(fake_entra: FakeEntra) -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        fake_entra.faults.outage("jwk")
    with pytest.raises(ValueError, match="times"):
        fake_entra.faults.outage("jwks", times=0)


def test_token_faults_by_grant(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    url = f"{LOGIN}/{s.tenant.tenant_id}/oauth2/v2.0/token"
    fake_entra.faults.rate_limit("token:client_credentials", retry_after=2)
    with httpx2.Client(transport=fake_entra.transport) as client:
        cc = client.post(url, data={"grant_type": "client_credentials", "client_id": s.client.app_id})
        other = client.post(url, data={"grant_type": "password", "client_id": s.client.app_id})
    assert cc.status_code == 429
    assert cc.headers["retry-after"] == "2"
    assert other.status_code != 429
    assert fake_entra.request_count("token") == 2


def test_counters(fake_entra: FakeEntra) -> None:
    with httpx2.Client(transport=fake_entra.transport) as client:
        client.get(JWKS)
        client.get(f"{LOGIN}/common/discovery/keys")
        client.get(OIDC)
        client.get(f"{LOGIN}/common/discovery/instance", params={"authorization_endpoint": f"{LOGIN}/common"})
    assert fake_entra.request_count("jwks") == 2
    assert fake_entra.request_count("openid_configuration") == 1
    assert fake_entra.request_count("instance_discovery") == 1
    assert fake_entra.request_count("token") == 0
    fake_entra.count("token:client_credentials")
    assert fake_entra.request_count("token:client_credentials") == 1
    fake_entra.reset_counts()
    assert fake_entra.request_count("jwks") == 0


def test_counters_are_thread_safe(fake_entra: FakeEntra) -> None:
    def work() -> None:
        with httpx2.Client(transport=fake_entra.transport) as client:
            for _ in range(10):
                client.get(JWKS)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_entra.request_count("jwks") == 60


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_faults(fake_entra: FakeEntra, backend: str) -> None:
    fake_entra.faults.outage("jwks", times=1)
    fake_entra.faults.latency("jwks", 0.02, times=1)

    async def main() -> int:
        async with httpx2.AsyncClient(transport=fake_entra.async_transport) as client:
            with pytest.raises(httpx2.ConnectError):
                await client.get(JWKS)
            start = time.monotonic()
            r = await client.get(JWKS)
            assert time.monotonic() - start >= 0.02
            return r.status_code

    assert anyio.run(main, backend=backend) == 200
    assert fake_entra.request_count("jwks") == 2
