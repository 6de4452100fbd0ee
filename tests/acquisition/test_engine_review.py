"""The acquisition engine's answers to the security review: retries on the engine's clock with injectable
jitter, unbelievable token-endpoint answers, a dripping token endpoint, tokens obtained with a claims
challenge, refused agent ids, credential files that are not regular files, and Redis entries written by
someone else."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import entra_mw
from entra_mw import CertificateCredential, ClientSecret, SignedAssertionFile
from entra_mw._acquisition._redis import RedisStore
from entra_mw._acquisition._types import AccessToken, TokenRequest
from entra_mw._acquisition.cache import TokenCache
from entra_mw._acquisition.engine import Acquirer
from entra_mw._clock import Clock, SystemClock
from entra_mw._http import HttpSeam
from entra_mw.errors import ConfigurationError, TokenAcquisitionError
from entra_mw.testing import FakeClock, FakeEntra, Scenario

from ._tokens import Fetcher, app_request, obo_request
from .conftest import AcquirerFactory


def req(scn: Scenario, flow: Any = "app", **kw: Any) -> TokenRequest:
    default = "/.default" if flow in ("app", "agent_app") else "/Weather.Read"
    kw.setdefault("scopes", (scn.api.identifier_uris[0] + default,))
    if flow.startswith("agent_"):
        kw.setdefault("agent_id", scn.agent.app_id)
    kw.setdefault("tenant", scn.tenant.tenant_id)
    return TokenRequest(flow=flow, client_id=scn.blueprint.app_id, **kw)


def rewriting(fake: FakeEntra, **changes: Any) -> httpx2.MockTransport:
    """FakeEntra, with ``changes`` applied to every successful token answer."""

    def route(request: httpx2.Request) -> httpx2.Response:
        response = fake.handle(request)
        if request.method != "POST" or response.status_code != 200:
            return response
        payload = json.loads(response.read())
        payload.update(changes)
        return httpx2.Response(200, content=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})

    return httpx2.MockTransport(route)


# -- the clock seam ---------------------------------------------------------------------------------------------


def test_clocks_sleep() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(FakeClock(), Clock)
    clock = FakeClock()
    started = time.monotonic()
    clock.sleep(3600)
    assert clock.monotonic() == 3600
    assert time.monotonic() - started < 1


@pytest.mark.anyio
async def test_fake_clock_asleep_advances() -> None:
    clock = FakeClock()
    await clock.asleep(30)
    assert clock.monotonic() == 30


def test_backoff_sleeps_on_the_engine_clock_with_injected_jitter(
    fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario
) -> None:
    draws: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    seam = HttpSeam(transport=fake_entra.transport)
    acquirer = Acquirer(
        entra_mw.EntraConfig(
            tenant_id=scn.tenant.tenant_id,
            client_id=scn.blueprint.app_id,
            credentials=(ClientSecret(scn.blueprint_secret),),
        ),
        seam,
        fake_clock,
        jitter=jitter,
    )
    try:
        fake_entra.faults.rate_limit("token", retry_after=2, times=1)
        fake_entra.faults.server_error("token", 503, times=1)
        started, real = fake_clock.monotonic(), time.monotonic()
        assert acquirer.fetch(req(scn)).token
        # Retry-After 2 plus the largest jitter (0.2), then the exponential back-off's upper end (0.5).
        assert fake_clock.monotonic() - started == pytest.approx(2.2 + 0.5)
        assert draws == [(0.0, pytest.approx(0.2)), (0.25, 0.5)]
        assert time.monotonic() - real < 1.0
    finally:
        acquirer.close()
        seam.close()


def test_no_sleeping_or_random_outside_the_clock_module() -> None:
    root = Path(entra_mw.__file__).parent
    owned = [*sorted((root / "_acquisition").glob("*.py")), root / "_downstream.py", root / "_http.py"]
    owned.append(root / "credentials.py")
    pattern = re.compile(r"\btime\.sleep\b|^\s*import random\b|\brandom\.\w+\(", re.MULTILINE)
    offenders = [str(path.relative_to(root)) for path in owned if pattern.search(path.read_text())]
    assert offenders == []


# -- answers that cannot be believed (item 9) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"expires_in": "NaN"},
        {"expires_in": "nan"},
        {"expires_in": "Infinity"},
        {"expires_in": 1e400},
        {"expires_in": -5},
        {"expires_in": 0.5},
        {"expires_in": 90_000},
        {"expires_in": "soon"},
        {"expires_in": True},
        {"token_type": "PoP"},
        {"token_type": 7},
        {"access_token": "two words"},
        {"access_token": "line\nbreak"},
    ],
)
def test_unbelievable_token_answers_are_502(
    fake_entra: FakeEntra, scn: Scenario, make_acquirer: AcquirerFactory, changes: dict[str, Any]
) -> None:
    acquirer = make_acquirer(transport=rewriting(fake_entra, **changes), token_request_retries=0)
    with pytest.raises(TokenAcquisitionError) as info:
        acquirer.fetch(req(scn))
    assert info.value.status_code in (502, 503)


@pytest.mark.parametrize("expires_in", [1, 3599, "3599", 86_400])
def test_believable_lifetimes_are_kept(
    fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario, make_acquirer: AcquirerFactory, expires_in: Any
) -> None:
    acquirer = make_acquirer(transport=rewriting(fake_entra, expires_in=expires_in))
    token = acquirer.fetch(req(scn))
    assert token.expires_on == pytest.approx(fake_clock.time() + float(expires_in))


# -- a dripping token endpoint (item 7) ---------------------------------------------------------------------------


def test_a_dripping_token_endpoint_is_cut_off(fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario) -> None:
    def drip() -> Iterator[bytes]:
        yield b"{"
        while True:
            time.sleep(0.05)
            yield b" "

    def route(request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":
            return httpx2.Response(200, content=drip())
        return fake_entra.handle(request)

    seam = HttpSeam(transport=httpx2.MockTransport(route), timeout=0.5)
    config = entra_mw.EntraConfig(
        tenant_id=scn.tenant.tenant_id,
        client_id=scn.blueprint.app_id,
        credentials=(ClientSecret(scn.blueprint_secret),),
        token_request_retries=0,
    )
    acquirer = Acquirer(config, seam, fake_clock)
    try:
        started = time.monotonic()
        with pytest.raises(TokenAcquisitionError) as info:
            acquirer.fetch(req(scn))
        assert time.monotonic() - started < 2.5
        assert info.value.status_code == 503
    finally:
        acquirer.close()
        seam.close()


# -- claims challenges and refused agents (item 13) ---------------------------------------------------------------


def test_tokens_obtained_with_a_claims_challenge_are_not_stored(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = Fetcher(fake_clock)
    claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'
    for n in range(5):
        token = cache.get_or_fetch(app_request(claims=claims, force_refresh=True), fetch)
        assert token.token == f"secret-token-{n + 1}"
    assert len(cache) == 0
    cache.get_or_fetch(app_request(), fetch)
    assert len(cache) == 1


def test_a_refused_agent_id_is_remembered_briefly(
    fake_entra: FakeEntra, fake_clock: FakeClock, scn: Scenario, make_acquirer: AcquirerFactory
) -> None:
    acquirer = make_acquirer()
    unknown = "00000000-0000-4000-8000-00000000dead"
    with pytest.raises(TokenAcquisitionError) as first:
        acquirer.fetch(req(scn, "agent_app", agent_id=unknown))
    requests = fake_entra.request_count("token")
    for _ in range(5):
        with pytest.raises(TokenAcquisitionError) as again:
            acquirer.fetch(req(scn, "agent_app", agent_id=unknown))
        assert again.value.error_codes == first.value.error_codes
        assert again.value.status_code == first.value.status_code
    assert fake_entra.request_count("token") == requests
    # Known agents are not affected, and after a while the unknown one is asked about again.
    assert acquirer.fetch(req(scn, "agent_app")).token
    fake_clock.advance(31)
    with pytest.raises(TokenAcquisitionError):
        acquirer.fetch(req(scn, "agent_app", agent_id=unknown))
    assert fake_entra.request_count("token") > requests + 1


# -- credential files (item 12) ----------------------------------------------------------------------------------


def _fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "make_credential", [lambda p: CertificateCredential(path=p), lambda p: SignedAssertionFile(path=p)]
)
def test_a_fifo_at_a_credential_path_is_refused(
    tmp_path: Path, scn: Scenario, make_acquirer: AcquirerFactory, make_credential: Any
) -> None:
    path = _fifo(tmp_path)
    acquirer = make_acquirer(credentials=[make_credential(str(path))])
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="not a regular file"):
        acquirer.fetch(req(scn))
    assert time.monotonic() - started < 2


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_device_at_a_credential_path_is_refused(scn: Scenario, make_acquirer: AcquirerFactory) -> None:
    acquirer = make_acquirer(credentials=[SignedAssertionFile(path="/dev/zero")])
    with pytest.raises(ConfigurationError, match="not a regular file"):
        acquirer.fetch(req(scn))


def test_an_oversized_assertion_file_is_refused(tmp_path: Path, scn: Scenario, make_acquirer: AcquirerFactory) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"a" * (1024 * 1024))
    acquirer = make_acquirer(credentials=[SignedAssertionFile(path=str(path))])
    with pytest.raises(ConfigurationError, match="larger than"):
        acquirer.fetch(req(scn))


# -- Redis written by someone else (item 11) -----------------------------------------------------------------------


def test_redis_without_a_key_warns_once_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="entra_mw"):
        store = RedisStore("redis://127.0.0.1:1/0")
    warnings = [r for r in caplog.records if "plaintext" in r.getMessage()]
    assert len(warnings) == 1
    assert "cache_encryption_key" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="entra_mw"):
        RedisStore("redis://127.0.0.1:1/0", encryption_key="k" * 32)
    assert not [r for r in caplog.records if "plaintext" in r.getMessage()]
    store.close()


def _planted(redis_url: str, redis_prefix: str, fake_clock: FakeClock, value: dict[str, Any]) -> AccessToken | None:
    import redis

    store = RedisStore(redis_url, prefix=redis_prefix, clock=fake_clock)
    request = obo_request()
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.set(store.redis_key(request.cache_key()), json.dumps(value).encode())
        return store.get(request.cache_key())
    finally:
        raw.close()
        store.close()


def _entry(fake_clock: FakeClock, **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "token": "planted-token",
        "expires_on": fake_clock.time() + 3600,
        "refresh_on": None,
        "token_type": "Bearer",
        "scopes": ["api://downstream/read"],
        "tenant": None,
    }
    entry.update(changes)
    return entry


def test_a_planted_entry_lives_at_most_a_day(redis_url: str, redis_prefix: str, fake_clock: FakeClock) -> None:
    forever = _entry(fake_clock, expires_on=fake_clock.time() + 10 * 365 * 86400, refresh_on=1e18)
    token = _planted(redis_url, redis_prefix, fake_clock, forever)
    assert token is not None
    assert token.expires_on == fake_clock.time() + 86400
    assert token.refresh_on is not None and token.refresh_on <= token.expires_on


@pytest.mark.parametrize(
    "changes",
    [{"token_type": "PoP"}, {"token_type": "bearer "}, {"token_type": "Basic"}, {"token": "a b"}, {"token": "a\r\nb"}],
)
def test_planted_token_types_the_library_never_writes_are_refused(
    redis_url: str, redis_prefix: str, fake_clock: FakeClock, changes: dict[str, Any]
) -> None:
    assert _planted(redis_url, redis_prefix, fake_clock, _entry(fake_clock, **changes)) is None
    assert _planted(redis_url, redis_prefix, fake_clock, _entry(fake_clock)) is not None
