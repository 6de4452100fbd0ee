"""The clock seam: wall time for token claims, monotonic time for cache ages and cooldowns, sleeping for
back-off, and the random source for jitter. Nothing else in the library sleeps or draws random numbers."""

from __future__ import annotations

import random
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "seeded_random", "uniform"]


@runtime_checkable
class Clock(Protocol):
    """Anything with ``time()`` (epoch seconds: ``exp``, ``nbf``, ``iat``), ``monotonic()``, ``sleep(seconds)``
    and ``await asleep(seconds)`` (retry back-off: a test clock advances instead of waiting)."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """The default clock: :func:`time.time`, :func:`time.monotonic`, :func:`time.sleep` and ``anyio.sleep``."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        import anyio

        await anyio.sleep(max(0.0, seconds))


def uniform(low: float, high: float) -> float:
    """The default jitter source: a float in ``[low, high]``. Back-off takes any function of this shape, so a
    test can make the jitter deterministic."""
    return random.uniform(low, high)  # noqa: S311 - spreading retries, not a secret


def seeded_random(seed: int) -> random.Random:
    """A deterministic random source: the same numbers on every run (FakeEntra's token lifetimes)."""
    return random.Random(seed)  # noqa: S311 - test data, not a secret
