"""The single-flight primitive on its own: thread, asyncio and trio followers of thread, asyncio and trio
leaders, in every mix; no deadlock for a sync caller on an async leader's thread; bounded waits; a cancelled
leader releases its followers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
import trio

from entra_mw._singleflight import Abandoned, Flight

# Generous bounds: they only matter when something is broken (a follower that never wakes up).
LONG = 10.0


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(target())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- threads ---------------------------------------------------------------------------------------------


def test_thread_followers_share_the_leaders_value() -> None:
    flight: Flight[str] = Flight(asynchronous=False)
    started = threading.Barrier(5)

    def follow() -> object:
        started.wait(LONG)
        assert flight.wait(LONG)
        return flight.outcome()

    threads = [in_thread(follow) for _ in range(4)]
    started.wait(LONG)
    flight.finish("value")
    for thread, out in threads:
        thread.join(LONG)
        assert out == ["value"]


def test_thread_followers_get_the_leaders_error_with_its_traceback() -> None:
    flight: Flight[str] = Flight(asynchronous=False)
    try:
        raise ValueError("refused")
    except ValueError as exc:
        flight.finish(error=exc)
    for _ in range(2):
        with pytest.raises(ValueError, match="refused") as caught:
            flight.outcome()
        assert caught.value.__traceback__ is not None


def test_waits_are_bounded() -> None:
    flight: Flight[str] = Flight(asynchronous=False)
    thread, out = in_thread(lambda: flight.wait(0.01))
    thread.join(LONG)
    assert out == [False]

    async def follower() -> bool:
        return await flight.await_done(0.01)

    assert anyio.run(follower) is False
    assert trio.run(follower) is False
    assert not flight.done


def test_finish_happens_once() -> None:
    flight: Flight[str] = Flight(asynchronous=False)
    flight.finish("first")
    flight.finish("second")
    flight.finish(error=RuntimeError("late"))
    assert flight.outcome() == "first"


def test_a_leader_interrupted_abandons_the_flight() -> None:
    flight: Flight[str] = Flight(asynchronous=False)
    flight.finish(error=KeyboardInterrupt())
    assert flight.done and flight.abandoned
    with pytest.raises(Abandoned):
        flight.outcome()


# -- deadlock avoidance ----------------------------------------------------------------------------------


def test_a_sync_caller_on_the_async_leaders_thread_would_deadlock() -> None:
    async def main() -> None:
        flight: Flight[str] = Flight(asynchronous=True)
        # A sync call made from a coroutine on the leader's loop must not block...
        assert flight.would_deadlock(asynchronous=False)
        # ...a task on the same loop may wait: the leader runs meanwhile.
        assert not flight.would_deadlock(asynchronous=True)
        # Another thread may block.
        thread, out = in_thread(lambda: flight.would_deadlock(asynchronous=False))
        thread.join(LONG)
        assert out == [False]

    asyncio.run(main())


def test_work_that_asks_for_itself_would_deadlock() -> None:
    flight: Flight[str] = Flight(asynchronous=False)
    assert flight.would_deadlock(asynchronous=False)
    assert flight.would_deadlock(asynchronous=True)


# -- async followers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_tasks_on_the_leaders_loop(backend: str) -> None:
    async def main() -> list[object]:
        flight: Flight[int] = Flight(asynchronous=True)
        got: list[object] = []

        async def follow() -> None:
            assert await flight.await_done(LONG)
            got.append(flight.outcome())

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(follow)
            await anyio.lowlevel.checkpoint()
            flight.finish(7)
        return got

    assert anyio.run(main, backend=backend) == [7] * 10


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_tasks_follow_a_thread_leader_without_polling(backend: str) -> None:
    """The leader finishes on another thread; the tasks are woken on their own loop, with no worker thread."""
    flight: Flight[str] = Flight(asynchronous=False)
    registered = threading.Event()

    async def main() -> list[object]:
        got: list[object] = []

        async def follow() -> None:
            assert await flight.await_done(LONG)
            got.append(flight.outcome())

        before = threading.active_count()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(follow)
            with anyio.fail_after(LONG):
                while len(flight._wakers) < 5:  # every follower is waiting on its loop
                    await anyio.lowlevel.checkpoint()
            assert threading.active_count() == before  # waiting starts no thread
            registered.set()
        return got

    def lead() -> None:
        registered.wait(LONG)
        flight.finish("from a thread")

    leader, _ = in_thread(lead)
    assert anyio.run(main, backend=backend) == ["from a thread"] * 5
    leader.join(LONG)


@pytest.mark.parametrize(("leader_backend", "follower_backend"), [("asyncio", "trio"), ("trio", "asyncio")])
def test_tasks_follow_a_leader_on_another_loop(leader_backend: str, follower_backend: str) -> None:
    flight: Flight[str] = Flight(asynchronous=True)
    waiting = threading.Event()

    async def follower() -> object:
        async def mark() -> None:
            await anyio.sleep(0.01)
            waiting.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(mark)
            assert await flight.await_done(LONG)
        return flight.outcome()

    async def leader() -> None:
        await anyio.to_thread.run_sync(waiting.wait, LONG)
        flight.finish("across loops")

    thread, out = in_thread(lambda: anyio.run(follower, backend=follower_backend))
    anyio.run(leader, backend=leader_backend)
    thread.join(LONG)
    assert out == ["across loops"]


def test_thread_followers_of_an_async_leader() -> None:
    async def main() -> list[object]:
        flight: Flight[str] = Flight(asynchronous=True)
        followers = [in_thread(lambda: (flight.wait(LONG), flight.outcome())[1]) for _ in range(3)]
        await anyio.sleep(0.01)
        flight.finish("from a task")
        for thread, _ in followers:
            await anyio.to_thread.run_sync(thread.join, LONG)
        return [out[0] for _, out in followers]

    assert anyio.run(main) == ["from a task"] * 3


# -- cancellation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancelled_leader_releases_its_followers(backend: str) -> None:
    async def main() -> tuple[bool, bool]:
        flight: Flight[str] = Flight(asynchronous=True)
        outcome: list[bool] = []

        async def lead() -> None:
            try:
                await anyio.sleep(LONG)
            except BaseException as exc:
                flight.finish(error=exc)
                raise

        async def follow() -> None:
            outcome.append(await flight.await_done(LONG))

        async def cancelled_leader() -> None:
            async with anyio.create_task_group() as leaders:
                leaders.start_soon(lead)
                await anyio.sleep(0.01)
                leaders.cancel_scope.cancel()  # the leader only: the follower is in another group

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            tg.start_soon(cancelled_leader)
        return outcome == [True], flight.abandoned

    assert anyio.run(main, backend=backend) == (True, True)


def test_a_cancelled_follower_leaves_no_waker_behind() -> None:
    flight: Flight[str] = Flight(asynchronous=False)

    async def main() -> None:
        with anyio.move_on_after(0.01):
            await flight.await_done(LONG)

    anyio.run(main)
    assert flight._wakers == []
    flight.finish("later")  # nobody to wake, nothing raised
    assert flight.outcome() == "later"


def test_a_follower_whose_loop_has_closed_does_not_break_the_leader() -> None:
    flight: Flight[str] = Flight(asynchronous=False)
    loop = asyncio.new_event_loop()
    try:

        async def register() -> None:
            with anyio.move_on_after(0):
                await flight.await_done(LONG)

        loop.run_until_complete(register())
    finally:
        loop.close()
    flight.finish("done")
    assert flight.outcome() == "done"
