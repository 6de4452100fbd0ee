"""The clock seam: wall time for token claims, monotonic time for cache ages and cooldowns."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Anything with ``time()`` (epoch seconds: ``exp``, ``nbf``, ``iat``) and ``monotonic()``."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The default clock: :func:`time.time` and :func:`time.monotonic`."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
