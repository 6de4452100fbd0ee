"""The key store on its own, over ``httpx2.MockTransport``: parsing, refresh rules, limits, single flight."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from entra_mw import EntraConfig, InvalidToken, ProviderUnavailable
from entra_mw._http import HttpSeam
from entra_mw._jwks import MAX_DOCUMENT_BYTES, KeyStore
from entra_mw.testing import FakeClock
from entra_mw.testing._keys import b64url

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
BASE = "https://login.microsoftonline.com"
META = f"{BASE}/{TENANT}/v2.0/.well-known/openid-configuration"
META_V1 = f"{BASE}/{TENANT}/.well-known/openid-configuration"
KEYS = f"{BASE}/{TENANT}/discovery/v2.0/keys"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def jwk(kid: str, *, bits: int = 2048, **extra: Any) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    n = key.public_key().public_numbers().n
    return {
        "kty": "RSA",
        "use": "sig",
        "kid": kid,
        "n": b64url(n.to_bytes((n.bit_length() + 7) // 8, "big")),
        "e": "AQAB",
        **extra,
    }


class Directory:
    """A scriptable metadata + JWKS server with request counters."""

    def __init__(self) -> None:
        self.keys: list[Any] = [jwk("k1")]
        self.metadata: dict[str, Any] = {"issuer": f"{BASE}/{TENANT}/v2.0", "jwks_uri": KEYS}
        self.counts: dict[str, int] = {}
        self.override: Callable[[httpx2.Request], httpx2.Response | None] | None = None
        self.lock = threading.Lock()
        self.delay = 0.0

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        kind = "jwks" if "keys" in path else ("meta_v1" if "/v2.0/" not in path else "meta")
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.override is not None:
            answer = self.override(request)
            if answer is not None:
                return answer
        if kind == "jwks":
            return httpx2.Response(200, json={"keys": self.keys})
        if kind == "meta_v1":
            return httpx2.Response(200, json={"issuer": f"https://sts.windows.net/{TENANT}/", "jwks_uri": KEYS})
        return httpx2.Response(200, json=self.metadata)

    def sync_handler(self, request: httpx2.Request) -> httpx2.Response:
        if self.delay:
            import time

            time.sleep(self.delay)
        return self.handle(request)

    async def async_handler(self, request: httpx2.Request) -> httpx2.Response:
        if self.delay:
            await anyio.sleep(self.delay)
        return self.handle(request)


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def store_for(directory: Directory, clock: FakeClock, **options: Any) -> KeyStore:
    config = EntraConfig(tenant_id=options.pop("tenant_id", TENANT), client_id=CLIENT, **options)
    seam = HttpSeam(
        transport=httpx2.MockTransport(directory.sync_handler),
        async_transport=httpx2.MockTransport(directory.async_handler),
    )
    return KeyStore(config, seam, clock)


def test_loads_keys_and_issuers(directory: Directory, clock: FakeClock) -> None:
    store = store_for(directory, clock)
    key, keyset = store.get_key("k1")
    assert key.kid == "k1"
    assert keyset.issuer_v2 == f"{BASE}/{{tenantid}}/v2.0"
    assert keyset.issuer_v1 == "https://sts.windows.net/{tenantid}/"
    assert keyset.tenant_id == TENANT
    assert directory.counts == {"meta": 1, "jwks": 1, "meta_v1": 1}
    store.get_key("k1")
    assert directory.counts["jwks"] == 1


def test_unusable_keys_are_skipped(directory: Directory, clock: FakeClock) -> None:
    directory.keys = [
        jwk("small", bits=1024),
        {**jwk("enc"), "use": "enc"},
        {**jwk("ec"), "kty": "EC"},
        {**jwk("hs"), "alg": "HS256"},
        {**jwk("even"), "e": b64url((65536).to_bytes(3, "big"))},
        {**jwk("bad-n"), "n": "!!!"},
        "not a key",
        jwk("good", issuer=f"{BASE}/{TENANT}/v2.0"),
        jwk("good"),  # duplicate kid: the first wins
    ]
    store = store_for(directory, clock)
    key, keyset = store.get_key("good")
    assert sorted(keyset.keys) == ["good"]
    assert key.issuer == f"{BASE}/{TENANT}/v2.0"
    for kid in ("small", "enc", "ec", "hs", "even", "bad-n"):
        with pytest.raises(InvalidToken):
            store.get_key(kid)


@pytest.mark.parametrize(
    "answer",
    [
        httpx2.Response(500),
        httpx2.Response(302, headers={"Location": "https://evil.example/keys"}),
        httpx2.Response(200, content=b"not json"),
        httpx2.Response(200, json=[1, 2]),
        httpx2.Response(200, json={"keys": []}),
        httpx2.Response(200, json={"keys": "x"}),
        httpx2.Response(200, content=b" " * (MAX_DOCUMENT_BYTES + 1)),
        httpx2.Response(200, headers={"Content-Length": str(MAX_DOCUMENT_BYTES * 10)}, content=b"{}"),
    ],
)
def test_bad_jwks_answers_mean_no_keys(directory: Directory, clock: FakeClock, answer: httpx2.Response) -> None:
    directory.override = lambda request: answer if "keys" in request.url.path else None
    store = store_for(directory, clock)
    with pytest.raises(ProviderUnavailable):
        store.get_key("k1")
    assert store.snapshot is None


@pytest.mark.parametrize(
    "metadata",
    [{}, {"jwks_uri": 5}, {"jwks_uri": "ftp://x/keys"}, {"jwks_uri": "https://x/ keys"}, {"jwks_uri": "https://"}],
)
def test_bad_metadata(directory: Directory, clock: FakeClock, metadata: dict[str, Any]) -> None:
    directory.metadata = metadata
    with pytest.raises(ProviderUnavailable):
        store_for(directory, clock).refresh()


def test_transport_errors(directory: Directory, clock: FakeClock) -> None:
    def fail(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("down", request=request)

    directory.override = fail
    with pytest.raises(ProviderUnavailable):
        store_for(directory, clock).get_key("k1")


def test_last_known_good_and_cooldown(directory: Directory, clock: FakeClock) -> None:
    store = store_for(directory, clock)
    store.get_key("k1")
    directory.override = lambda request: httpx2.Response(503)
    with pytest.raises(InvalidToken):
        store.get_key("k2")  # forced refresh fails
    assert store.get_key("k1")[0].kid == "k1"
    clock.advance(13 * 3600)
    assert store.get_key("k1")[0].kid == "k1"  # scheduled refresh fails: keys kept
    jwks_before = directory.counts.get("jwks", 0) + directory.counts.get("meta", 0)
    store.get_key("k1")
    assert directory.counts.get("jwks", 0) + directory.counts.get("meta", 0) == jwks_before
    directory.override = None
    directory.keys = [jwk("k2")]
    clock.advance(300)
    assert store.get_key("k2")[0].kid == "k2"
    with pytest.raises(InvalidToken):
        store.get_key("k1")  # rotated out


def test_first_forced_refresh_is_immediate_then_cooldown(directory: Directory, clock: FakeClock) -> None:
    store = store_for(directory, clock)
    store.refresh()
    directory.keys.append(jwk("k2"))
    store.get_key("k2")
    directory.keys.append(jwk("k3"))
    with pytest.raises(InvalidToken):
        store.get_key("k3")
    assert directory.counts["jwks"] == 2
    clock.advance(299)
    with pytest.raises(InvalidToken):
        store.get_key("k3")
    clock.advance(1)
    store.get_key("k3")
    assert directory.counts["jwks"] == 3


def test_negative_cache_is_bounded(directory: Directory, clock: FakeClock) -> None:
    store = store_for(directory, clock, jwks_unknown_kid_cache_size=4)
    store.refresh()
    for i in range(100):
        with pytest.raises(InvalidToken):
            store.get_key(f"nope-{i}")
    assert directory.counts["jwks"] <= 2


def test_domain_tenant_and_common(directory: Directory, clock: FakeClock) -> None:
    store = store_for(directory, clock, tenant_id="contoso.onmicrosoft.com")
    assert store.refresh().tenant_id == TENANT
    directory.metadata = {"issuer": f"{BASE}/{{tenantid}}/v2.0", "jwks_uri": KEYS}
    common = store_for(directory, clock, tenant_id="common").refresh()
    assert common.tenant_id is None
    assert common.issuer_v2 == f"{BASE}/{{tenantid}}/v2.0"
    directory.metadata = {"issuer": f"{BASE}/not-a-guid/v2.0", "jwks_uri": KEYS}
    with pytest.raises(ProviderUnavailable):
        store_for(directory, clock, tenant_id="fabrikam.onmicrosoft.com").refresh()


def test_v1_issuer_falls_back_when_v1_metadata_fails(directory: Directory, clock: FakeClock) -> None:
    directory.override = lambda request: (
        httpx2.Response(404) if "/v2.0/" not in request.url.path and "keys" not in request.url.path else None
    )
    keyset = store_for(directory, clock).refresh()
    assert keyset.issuer_v1 == "https://sts.windows.net/{tenantid}/"


def test_appid_query_reaches_metadata(directory: Directory, clock: FakeClock) -> None:
    seen: list[str] = []

    def record(request: httpx2.Request) -> httpx2.Response | None:
        seen.append(str(request.url))
        return None

    directory.override = record
    directory.metadata = {"issuer": f"{BASE}/{TENANT}/v2.0", "jwks_uri": KEYS + "?appid=" + CLIENT}
    store_for(directory, clock, extra_query_parameters={"appid": CLIENT}).refresh()
    assert seen[0] == META + "?appid=" + CLIENT
    assert seen[1] == KEYS + "?appid=" + CLIENT


def test_single_flight_threads(directory: Directory, clock: FakeClock) -> None:
    store = store_for(directory, clock)
    directory.delay = 0.05
    barrier = threading.Barrier(12)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            store.get_key("k1")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert directory.counts["jwks"] == 1


@pytest.mark.anyio
async def test_single_flight_tasks(directory: Directory, clock: FakeClock) -> None:
    store = store_for(directory, clock)
    directory.delay = 0.02
    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(store.aget_key, "k1")
    assert directory.counts["jwks"] == 1
    directory.keys.append(jwk("k2"))
    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(store.aget_key, "k2")
    assert directory.counts["jwks"] == 2


@pytest.mark.anyio
async def test_async_failures(directory: Directory, clock: FakeClock) -> None:
    directory.override = lambda request: httpx2.Response(200, content=b"\xff" * 10)
    store = store_for(directory, clock)
    with pytest.raises(ProviderUnavailable):
        await store.aget_key("k1")
    directory.override = None
    clock.advance(1)
    assert (await store.arefresh()).keys["k1"].kid == "k1"


@pytest.mark.anyio
async def test_cancelled_leader_releases_the_flight(directory: Directory, clock: FakeClock) -> None:
    store = store_for(directory, clock)
    directory.delay = 0.5
    with anyio.move_on_after(0.05):
        await store.arefresh()
    directory.delay = 0.0
    await store.arefresh()
    assert store.snapshot is not None


def test_logs_refresh_without_documents(
    directory: Directory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="entra_mw")
    store_for(directory, clock).refresh()
    text = caplog.text
    assert "keys=1" in text and "k1" in text
    assert json.dumps(directory.keys[0]["n"])[1:-1] not in text
