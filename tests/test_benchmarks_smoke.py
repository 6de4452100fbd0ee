"""The validation benchmark runs end to end with tiny counts (timings are not asserted, docs not written)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def validation() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("entra_mw_bench_validation", BENCHMARKS / "validation.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_benchmark_functions_run(validation: ModuleType, tmp_path: Path) -> None:
    bench = validation.setup()
    try:
        raw = validation.bench_raw_verify(bench, number=3, repeat=2)
        cold = validation.bench_cold(bench, number=2, repeat=2)
        hit = validation.bench_hit(bench, number=5, repeat=2)
        mw = validation.bench_middleware(bench, number=5, repeat=2)
    finally:
        bench.close()
    for stats in (raw, cold, hit, mw.bare, mw.protected, mw.noop, mw.noop_protected):
        assert stats.min > 0
        assert stats.median >= stats.min
    report = validation.Report(raw=raw, cold=cold, hit=hit, middleware=mw, load=None)
    assert len(report.checks()) == 3
    text = report.markdown("benchmarks/validation.py")
    assert "raw RSA-2048" in text

    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n## Token validation\n\nSTALE-FIGURES\n\n## Other\n\nkept\n")
    common = sys.modules["_common"]
    common.update_section("Token validation", text, doc)
    common.update_section("Token validation", text, doc)
    updated = doc.read_text()
    assert updated.count("## Token validation") == 1
    assert "STALE-FIGURES" not in updated
    assert "## Other\n\nkept" in updated


@pytest.mark.loopback
@pytest.mark.timeout(90)
def test_uvicorn_load_runs(validation: ModuleType) -> None:
    load = validation.bench_uvicorn(duration=0.3, rounds=1, connections=2, tool="python")
    assert load.bare > 0
    assert load.protected > 0
