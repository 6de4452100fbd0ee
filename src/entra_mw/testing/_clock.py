"""A manual clock for tests: wall time and monotonic time that move only when told to."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A thread-safe clock satisfying :class:`entra_mw._clock.Clock` that advances only on :meth:`advance` (and
    :meth:`sleep`, which advances instead of waiting).

    ``time()`` starts at ``start`` (epoch seconds, 2027-01-15 by default, so tokens minted with it are
    obviously not "now"); ``monotonic()`` starts at 0 and moves by the same amounts.

    Example::

        clock = FakeClock()
        t0 = clock.time()
        clock.advance(3600)
        assert clock.time() == t0 + 3600
    """

    __slots__ = ("_lock", "_monotonic", "_time")

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._lock = threading.Lock()
        self._time = float(start)
        self._monotonic = 0.0

    def time(self) -> float:
        with self._lock:
            return self._time

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def sleep(self, seconds: float) -> None:
        """Return at once, with both clocks moved forward by ``seconds`` (retry back-off costs no real time)."""
        if seconds > 0:
            self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        """Async twin of :meth:`sleep`; yields to the event loop once, as a real sleep would."""
        import anyio.lowlevel

        if seconds > 0:
            self.advance(seconds)
        await anyio.lowlevel.checkpoint()

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never backwards: monotonic time must not decrease)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._time += seconds
            self._monotonic += seconds

    def __repr__(self) -> str:
        return f"FakeClock(time={self.time()!r}, monotonic={self.monotonic()!r})"
