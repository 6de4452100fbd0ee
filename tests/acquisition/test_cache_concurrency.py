"""TokenCache single flight: N concurrent misses on one key → one fetch, in threads, in tasks, and mixed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anyio
import anyio.to_thread
import pytest

from entra_mw._acquisition._types import AccessToken, TokenRequest
from entra_mw._acquisition.cache import TokenCache
from entra_mw.errors import TokenAcquisitionError
from entra_mw.testing import FakeClock

from ._tokens import obo_request

WAIT = 10.0  # seconds; only reached when something is broken


def token(clock: FakeClock, n: int, refresh_in: float | None = None) -> AccessToken:
    now = clock.time()
    return AccessToken(
        token=f"token-{n}", expires_on=now + 3600, refresh_on=None if refresh_in is None else now + refresh_in
    )


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


async def await_until(predicate: Callable[[], bool]) -> None:
    # Polls the cache's public counters: the cache offers no event to wait on, by design.
    with anyio.fail_after(WAIT):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.001)


class GatedFetch:
    """A sync fetch that blocks until ``gate`` is set, counting calls."""

    def __init__(self, clock: FakeClock, *, error: Exception | None = None, refresh_in: float | None = None) -> None:
        self.clock = clock
        self.gate = threading.Event()
        self.calls = 0
        self.error = error
        self.refresh_in = refresh_in
        self._lock = threading.Lock()

    def __call__(self, req: TokenRequest) -> AccessToken:
        with self._lock:
            self.calls += 1
            n = self.calls
        assert self.gate.wait(WAIT)
        if self.error is not None:
            raise self.error
        return token(self.clock, n, self.refresh_in)


class AsyncGatedFetch:
    """An async fetch that waits for ``gate`` (an ``anyio.Event``: build it inside the test's event loop),
    counting calls; raises ``error`` when set."""

    def __init__(self, clock: FakeClock, *, error: Exception | None = None) -> None:
        self.clock = clock
        self.gate = anyio.Event()
        self.calls = 0
        self.error = error

    async def __call__(self, req: TokenRequest) -> AccessToken:
        self.calls += 1
        n = self.calls
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return token(self.clock, n)


# -- threads ------------------------------------------------------------------------------------------------


def test_threads_one_fetch_per_key(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    threads, rounds = 64, 12
    with ThreadPoolExecutor(threads) as pool:
        for r in range(rounds):
            fetch = GatedFetch(fake_clock)
            req = obo_request(f"user-{r}")
            futures = [pool.submit(cache.get_or_fetch, req, fetch) for _ in range(threads)]
            wait_until(lambda r=r: cache.stats.misses == threads * (r + 1))  # type: ignore[misc]
            fetch.gate.set()
            results = {f.result(WAIT).token for f in futures}
            assert fetch.calls == 1
            assert results == {"token-1"}
    assert cache.in_flight == 0
    assert cache.stats.fetches == rounds


def test_threads_share_the_error(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = GatedFetch(fake_clock, error=TokenAcquisitionError("Entra could not be reached"))
    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(cache.get_or_fetch, obo_request(), fetch) for _ in range(32)]
        wait_until(lambda: cache.stats.misses == 32)
        fetch.gate.set()
        errors = [f.exception(WAIT) for f in futures]
    assert all(isinstance(e, TokenAcquisitionError) for e in errors)
    assert fetch.calls == 1
    assert cache.in_flight == 0
    # Not cached: the next caller fetches again.
    fetch.error = None
    assert cache.get_or_fetch(obo_request(), fetch).token == "token-2"


def test_threads_other_keys_do_not_wait(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    slow = GatedFetch(fake_clock)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(cache.get_or_fetch, obo_request("slow-user"), slow)
        wait_until(lambda: slow.calls == 1)
        fast = cache.get_or_fetch(obo_request("fast-user"), lambda req: token(fake_clock, 99))
        assert fast.token == "token-99"
        assert not pending.done()
        slow.gate.set()
        assert pending.result(WAIT).token == "token-1"


def test_threads_keep_the_stale_token_while_one_refreshes(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    first = cache.get_or_fetch(obo_request(), lambda req: token(fake_clock, 0, refresh_in=1800))
    fake_clock.advance(1800)
    refresh = GatedFetch(fake_clock)
    with ThreadPoolExecutor(1) as pool:
        refreshing = pool.submit(cache.get_or_fetch, obo_request(), refresh)
        wait_until(lambda: refresh.calls == 1)
        for _ in range(10):
            assert cache.get_or_fetch(obo_request(), refresh) is first
        refresh.gate.set()
        assert refreshing.result(WAIT).token == "token-1"
    assert refresh.calls == 1
    assert cache.get_or_fetch(obo_request(), refresh).token == "token-1"
    assert cache.stats.stale_served == 10


def test_reentrant_fetch_of_the_same_key_does_not_deadlock(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)

    def outer(req: TokenRequest) -> AccessToken:
        return cache.get_or_fetch(req, lambda r: token(fake_clock, 2))

    assert cache.get_or_fetch(obo_request(), outer).token == "token-2"


# -- tasks --------------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_tasks_one_fetch_for_1000_misses(fake_clock: FakeClock, anyio_backend: str) -> None:
    cache = TokenCache(clock=fake_clock)
    afetch = AsyncGatedFetch(fake_clock)
    results: list[AccessToken] = []

    async def one() -> None:
        results.append(await cache.aget_or_fetch(obo_request(), afetch))

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(one)
        await await_until(lambda: cache.stats.misses == 1000)
        afetch.gate.set()
    assert afetch.calls == 1
    assert len(results) == 1000
    assert {r.token for r in results} == {"token-1"}
    assert cache.in_flight == 0


@pytest.mark.anyio
async def test_tasks_share_the_error(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    afetch = AsyncGatedFetch(fake_clock, error=TokenAcquisitionError("Entra could not be reached"))
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await cache.aget_or_fetch(obo_request(), afetch)
        except TokenAcquisitionError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(one)
        await await_until(lambda: cache.stats.misses == 100)
        afetch.gate.set()
    assert afetch.calls == 1
    assert len(errors) == 100
    # Raised a hundred times, the shared error still carries a short traceback.
    depth, tb = 0, errors[-1].__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth < 20


@pytest.mark.anyio
async def test_tasks_other_keys_do_not_wait(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    slow = AsyncGatedFetch(fake_clock)

    async def fast(req: TokenRequest) -> AccessToken:
        return token(fake_clock, 2)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.aget_or_fetch, obo_request("slow-user"), slow)
        await await_until(lambda: cache.in_flight == 1)
        assert (await cache.aget_or_fetch(obo_request("fast-user"), fast)).token == "token-2"
        assert cache.in_flight == 1
        slow.gate.set()


@pytest.mark.anyio
async def test_cancelled_owner_hands_over_to_a_waiter(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    calls = 0
    results: list[str] = []

    async def afetch(req: TokenRequest) -> AccessToken:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep_forever()
        return token(fake_clock, calls)

    async def waiter() -> None:
        results.append((await cache.aget_or_fetch(obo_request(), afetch)).token)

    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as owner_scope:
            async with anyio.create_task_group() as owner:
                owner.start_soon(cache.aget_or_fetch, obo_request(), afetch)
                await await_until(lambda: calls == 1)
                for _ in range(5):
                    tg.start_soon(waiter)
                await await_until(lambda: cache.stats.misses == 6)
                owner_scope.cancel()
    assert results == ["token-2"] * 5
    assert calls == 2
    assert cache.in_flight == 0


# -- sync and async together --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_thread_waits_for_an_async_owner(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    afetch = AsyncGatedFetch(fake_clock)

    def fetch(req: TokenRequest) -> AccessToken:
        raise AssertionError("the task's fetch should be shared")

    results: list[str] = []

    async def in_thread() -> None:
        results.append((await anyio.to_thread.run_sync(cache.get_or_fetch, obo_request(), fetch)).token)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.aget_or_fetch, obo_request(), afetch)
        await await_until(lambda: cache.in_flight == 1)
        tg.start_soon(in_thread)
        await await_until(lambda: cache.stats.misses == 2)
        afetch.gate.set()
    assert results == ["token-1"]
    assert afetch.calls == 1


@pytest.mark.anyio
async def test_tasks_wait_for_a_thread_owner(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    fetch = GatedFetch(fake_clock)
    results: list[str] = []

    async def afetch(req: TokenRequest) -> AccessToken:
        raise AssertionError("the thread's fetch should be shared")

    async def task() -> None:
        results.append((await cache.aget_or_fetch(obo_request(), afetch)).token)

    async def in_thread() -> None:
        results.append((await anyio.to_thread.run_sync(cache.get_or_fetch, obo_request(), fetch)).token)

    async with anyio.create_task_group() as tg:
        tg.start_soon(in_thread)
        await await_until(lambda: fetch.calls == 1)
        for _ in range(10):
            tg.start_soon(task)
        await await_until(lambda: cache.stats.misses == 11)
        fetch.gate.set()
    assert results == ["token-1"] * 11
    assert fetch.calls == 1


@pytest.mark.anyio
async def test_sync_call_on_the_loop_thread_does_not_deadlock(fake_clock: FakeClock) -> None:
    cache = TokenCache(clock=fake_clock)
    afetch = AsyncGatedFetch(fake_clock)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cache.aget_or_fetch, obo_request(), afetch)
        await await_until(lambda: cache.in_flight == 1)
        # Blocking the loop thread to wait for a task on that loop would never end: it fetches on its own.
        assert cache.get_or_fetch(obo_request(), lambda req: token(fake_clock, 2)).token == "token-2"
        afetch.gate.set()
    assert cache.in_flight == 0
