"""The flow runner: a generator of typed steps driven to its return value, sync and async, with the I/O's errors
thrown back into the flow at its ``yield`` (or, for types not given in ``throw``, raised from the driver), and
the flow closed however the driver ends."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from entra_mw._flow import Flow, arun, run


@dataclass(frozen=True)
class Get:
    url: str


class Gone(Exception):
    pass


def fetch_two(log: list[str]) -> Flow[Get, str]:
    try:
        first = yield Get("a")
        try:
            second = yield Get("b")
        except Gone:
            log.append("b gone")
            second = "fallback"
        return f"{first}+{second}"
    finally:
        log.append("closed")


def sync_do(step: Get) -> str:
    if step.url == "b":
        raise Gone
    return step.url.upper()


async def async_do(step: Get) -> str:
    await anyio.lowlevel.checkpoint()
    return sync_do(step)


def test_sync_driver_sends_results_and_throws_errors_back() -> None:
    log: list[str] = []
    assert run(fetch_two(log), sync_do) == "A+fallback"
    assert log == ["b gone", "closed"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_driver_does_the_same(backend: str) -> None:
    log: list[str] = []
    assert anyio.run(arun, fetch_two(log), async_do, backend=backend) == "A+fallback"
    assert log == ["b gone", "closed"]


def test_errors_not_in_throw_propagate_and_the_flow_is_closed() -> None:
    log: list[str] = []
    with pytest.raises(Gone):
        run(fetch_two(log), sync_do, throw=(KeyError,))
    assert log == ["closed"]  # never saw the error at its yield; closed by the driver


def test_an_error_the_flow_does_not_handle_leaves_it() -> None:
    def flow() -> Flow[Get, str]:
        yield Get("b")
        return "unreachable"

    with pytest.raises(Gone):
        run(flow(), sync_do)


def test_cancellation_reaches_the_flow_so_it_can_release_what_it_holds() -> None:
    released: list[str] = []

    def flow() -> Generator[Get, Any, str]:
        try:
            yield Get("slow")
        except BaseException as exc:
            released.append(type(exc).__name__)
            raise
        return "unreachable"

    async def slow(step: Get) -> str:
        await anyio.sleep(10)
        return "late"

    async def main() -> None:
        with anyio.move_on_after(0.01):
            await arun(flow(), slow)

    anyio.run(main)
    assert released == ["CancelledError"]


def test_a_flow_without_steps_returns_at_once() -> None:
    def flow(steps: int) -> Flow[Get, int]:
        for _ in range(steps):
            yield Get("never")
        return 3

    assert run(flow(0), sync_do) == 3
