"""Helpers for the benchmark scripts: repeated timing, machine facts, updating docs/performance.md."""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import re
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Seconds per operation over several repeats (timeit style: the minimum is the least disturbed run)."""

    per_op: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.per_op)

    @property
    def median(self) -> float:
        return statistics.median(self.per_op)

    def us(self) -> str:
        return f"{self.min * 1e6:.2f} µs (median {self.median * 1e6:.2f})"


def measure(fn: Callable[[], object], *, number: int, repeat: int, warmup: int = 1) -> Stats:
    """Call ``fn`` ``number`` times per repeat; return per-call times. GC is off while timing (as timeit)."""
    for _ in range(warmup):
        fn()
    out = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            out.append((time.perf_counter() - start) / number)
    finally:
        if enabled:
            gc.enable()
    return Stats(per_op=tuple(out))


def measure_each(fn: Callable[[str], object], batches: Sequence[Sequence[str]]) -> Stats:
    """Call ``fn`` once per item of each batch (one batch per repeat), for work that must not see an input
    twice."""
    out = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for batch in batches:
            start = time.perf_counter()
            for item in batch:
                fn(item)
            out.append((time.perf_counter() - start) / len(batch))
    finally:
        if enabled:
            gc.enable()
    return Stats(per_op=tuple(out))


def measure_async_pair(
    a: Callable[[], Awaitable[object]], b: Callable[[], Awaitable[object]], *, number: int, repeat: int
) -> tuple[Stats, Stats]:
    """Time two coroutine functions on one event loop, interleaving their repeats so drift hits both alike."""

    async def run(fn: Callable[[], Awaitable[object]]) -> float:
        start = time.perf_counter()
        for _ in range(number):
            await fn()
        return (time.perf_counter() - start) / number

    async def main() -> tuple[list[float], list[float]]:
        await run(a)
        await run(b)
        ta: list[float] = []
        tb: list[float] = []
        for _ in range(repeat):
            ta.append(await run(a))
            tb.append(await run(b))
        return ta, tb

    enabled = gc.isenabled()
    gc.disable()
    try:
        ta, tb = asyncio.run(main())
    finally:
        if enabled:
            gc.enable()
    return Stats(per_op=tuple(ta)), Stats(per_op=tuple(tb))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(packages: Iterable[str]) -> str:
    """One markdown paragraph: CPU, cores, OS, Python and the versions of ``packages``."""
    versions = ", ".join(f"{name} {_version(name)}" for name in packages)
    return (
        f"{_cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}; "
        f"{platform.python_implementation()} {platform.python_version()}; {versions}."
    )


def update_section(heading: str, body: str, path: Path = PERFORMANCE_DOC) -> None:
    """Replace the ``## heading`` section of ``path`` (up to the next ``## ``) with ``body``, or append it."""
    title = f"## {heading}"
    section = f"{title}\n\n{body.strip()}\n"
    text = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
