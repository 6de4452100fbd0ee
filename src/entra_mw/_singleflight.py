"""Single flight: one caller (the leader) does a piece of work; every other caller that needs it at the same time
(a follower) waits for it and shares its outcome. Used by the key store (one refresh at a time) and the token
cache (one fetch per key).

Leaders and followers may be threads, asyncio tasks or trio tasks, in any mix:

* a thread follower blocks on a :class:`threading.Event`;
* a task follower awaits an event of its own loop, which the leader sets from whatever thread it finishes on
  (``loop.call_soon_threadsafe`` or trio's ``run_sync_soon``): no polling, no worker thread, and the finishing
  thread never blocks on another loop;
* a synchronous caller on the thread of an async leader (a sync call made from a coroutine on the leader's
  loop) must not block, since the leader can only finish once that thread returns to its loop:
  :meth:`Flight.would_deadlock` says so, and the caller does the work without the flight;
* every wait is bounded by a timeout;
* a leader that is cancelled (or interrupted) still ends its flight, as *abandoned*: its followers wake up and
  start over, one of them becoming the next leader.

Where flights are kept (one slot, a map per key) and when one may start is the owner's decision, under its own
lock; this module only provides the flight.

::

    flight = Flight(asynchronous=False)        # leader: registered by the owner under its lock
    try:
        flight.finish(value=do_the_work())
    except BaseException as exc:
        flight.finish(error=exc)
        raise

    if flight.wait(timeout=30.0):              # follower (or: await flight.await_done(within=30.0))
        value = flight.outcome()               # raises the leader's error; Abandoned when it was cancelled
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Abandoned", "Flight"]

T = TypeVar("T")


class Abandoned(Exception):
    """The leader was cancelled or interrupted before it finished: followers start over."""


def _waker(set_event: Callable[[], None]) -> Callable[[], None]:
    """A function any thread may call, without blocking, to run ``set_event`` on the current event loop."""
    thread = threading.get_ident()
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        token = trio.lowlevel.current_trio_token()

        def wake_trio() -> None:
            if threading.get_ident() == thread:
                set_event()
            else:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(set_event)

        return wake_trio
    loop = asyncio.get_running_loop()

    def wake_asyncio() -> None:
        if threading.get_ident() == thread:
            set_event()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(set_event)

    return wake_asyncio


class Flight(Generic[T]):
    """One piece of work under way, led by the caller that created it. See the module documentation."""

    __slots__ = ("_done", "_error", "_lock", "_tb", "_value", "_wakers", "abandoned", "asynchronous", "thread")

    def __init__(self, *, asynchronous: bool) -> None:
        #: The leader's thread, and whether the leader is a task on that thread's event loop.
        self.thread = threading.get_ident()
        self.asynchronous = asynchronous
        self.abandoned = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []
        self._value: T | None = None
        self._error: BaseException | None = None
        self._tb: TracebackType | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def would_deadlock(self, *, asynchronous: bool) -> bool:
        """Whether waiting here could never end: the caller runs on the leader's thread, and either blocks
        (a sync caller under an async leader's loop) or the leader is not a task that could run meanwhile
        (the work asking for itself)."""
        return self.thread == threading.get_ident() and not (asynchronous and self.asynchronous)

    # -- the leader --------------------------------------------------------------------------------------

    def finish(self, value: T | None = None, *, error: BaseException | None = None) -> None:
        """End the flight (once; later calls are ignored) and wake every follower. An ``error`` that is an
        ``Exception`` is shared with the followers; any other (cancellation, interruption) abandons the
        flight."""
        with self._lock:
            if self._done.is_set():
                return
            if isinstance(error, Exception):
                self._error = error
                self._tb = error.__traceback__
            elif error is not None:
                self.abandoned = True
            self._value = value
            self._done.set()
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    # -- followers ---------------------------------------------------------------------------------------

    def wait(self, timeout: float) -> bool:
        """Block this thread until the flight ends or ``timeout`` seconds pass; ``True`` when it ended."""
        return self._done.wait(timeout)

    async def await_done(self, within: float) -> bool:
        """Async twin of :meth:`wait` (``within`` seconds at most), for a task on asyncio or trio, whatever
        thread or loop the leader is on."""
        if self._done.is_set():
            return True
        import anyio

        event = anyio.Event()
        wake = _waker(event.set)
        with self._lock:
            if self._done.is_set():
                return True
            self._wakers.append(wake)
        try:
            with anyio.move_on_after(within):
                await event.wait()
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._wakers.remove(wake)
        return self._done.is_set()

    def outcome(self) -> T:
        """What the leader produced: its value, or its error raised again (from the leader's traceback, so
        tracebacks do not pile up across many followers). :class:`Abandoned` when the leader was cancelled."""
        if self.abandoned:
            raise Abandoned("the leader of this flight was cancelled")
        if self._error is not None:
            raise self._error.with_traceback(self._tb)
        return self._value  # type: ignore[return-value]
