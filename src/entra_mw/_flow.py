"""The flow runner: multi-step I/O written once, as a generator, and driven by a sync or an async driver.

A flow makes every decision and ``yield``\\ s a typed *step* (what it needs done: fetch this URL, send this
request, get this token); the driver does the I/O and sends the result back, or throws the exception the I/O
raised back into the flow at the ``yield``, so the flow's own ``try``/``finally`` clean up and decide. The
flow's ``return`` value is the driver's result. This is the sans-IO shape of httpx's auth flows::

    def flow() -> Flow[Get, bytes, Keys]:
        meta = parse((yield Get(metadata_url)))
        return parse_keys((yield Get(meta.jwks_uri)))

    keys = run(flow(), lambda step: fetch(step.url))              # sync
    keys = await arun(flow(), lambda step: afetch(step.url))      # async (asyncio or trio)

``throw`` names the exceptions handed back to the flow (default: every exception, cancellation included, so a
flow can release what it holds); others propagate from the driver directly. Either way the flow is closed
when the driver returns or raises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["Flow", "arun", "run"]

S = TypeVar("S")
R = TypeVar("R")

#: A flow that yields steps of type ``S``, is sent results (``Any``: each step type has its own) and returns ``R``.
Flow = Generator[S, Any, R]

_EVERYTHING: tuple[type[BaseException], ...] = (BaseException,)


def run(
    flow: Generator[S, Any, R],
    do: Callable[[S], Any],
    *,
    throw: tuple[type[BaseException], ...] = _EVERYTHING,
) -> R:
    """Drive ``flow`` to its end: each step it yields is done by ``do(step)``; the result is sent back, an
    exception of a ``throw`` type is thrown back in. Returns what the flow returns."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                result: R = stop.value
                return result
            value = error = None
            try:
                value = do(step)
            except throw as exc:
                error = exc
    finally:
        error = None  # no reference cycle through the traceback
        flow.close()


async def arun(
    flow: Generator[S, Any, R],
    do: Callable[[S], Awaitable[Any]],
    *,
    throw: tuple[type[BaseException], ...] = _EVERYTHING,
) -> R:
    """Async twin of :func:`run`: ``await do(step)`` for each step."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                result: R = stop.value
                return result
            value = error = None
            try:
                value = await do(step)
            except throw as exc:
                error = exc
    finally:
        error = None
        flow.close()
