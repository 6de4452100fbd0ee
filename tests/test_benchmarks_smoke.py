"""The validation benchmark runs end to end with tiny counts (timings are not asserted, docs not written)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(script: str) -> Iterator[ModuleType]:
    """Imports ``benchmarks/<script>.py`` as a module for the duration of a test."""
    spec = importlib.util.spec_from_file_location(f"entra_mw_bench_{script}", BENCHMARKS / f"{script}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture
def validation() -> Iterator[ModuleType]:
    yield from load_benchmark("validation")


def test_benchmark_functions_run(validation: ModuleType, tmp_path: Path) -> None:
    bench = validation.setup()
    try:
        raw = validation.bench_raw_verify(bench, number=3, repeat=2)
        cold = validation.bench_cold(bench, number=2, repeat=2)
        pyjwt = validation.bench_pyjwt(bench, number=2, repeat=2)
        hit = validation.bench_hit(bench, number=5, repeat=2)
        mw = validation.bench_middleware(bench, number=5, repeat=2)
    finally:
        bench.close()
    for stats in (raw, cold, pyjwt, hit, mw.bare, mw.protected, mw.noop, mw.noop_protected):
        assert stats.min > 0
        assert stats.median >= stats.min
    imports = validation.bench_import(repeat=1)
    assert imports.entra_mw > 0 and imports.jwt_crypto > 0
    report = validation.Report(raw=raw, cold=cold, pyjwt=pyjwt, hit=hit, middleware=mw, load=None, imports=imports)
    assert len(report.checks()) == 4
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


@pytest.fixture
def acquisition() -> Iterator[ModuleType]:
    yield from load_benchmark("acquisition")


@pytest.mark.timeout(120)
def test_acquisition_benchmark_runs(acquisition: ModuleType, tmp_path: Path) -> None:
    # Tiny sizes; timings are not asserted, token-request counts are (they do not depend on the machine).
    sizes = acquisition.Sizes(users=(1, 40), number=50, repeat=1, obo_calls=3, tasks=20, threads=4, memory_entries=50)
    report = acquisition.run(sizes)
    for row, _label in acquisition.ROWS:
        assert all(report.hits[row][users].min > 0 for users in sizes.users)
    assert report.repeated.ours == 1
    assert report.repeated.msal == sizes.obo_calls
    assert [(f.token_requests, f.distinct_headers) for f in report.flights] == [(1, 1), (1, 1)]
    assert report.memory.total > report.memory.token_string > 0
    assert len(report.checks()) == 5
    text = report.markdown("benchmarks/acquisition.py")
    assert "acquire_token_silent" in text

    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n## Token validation\n\nkept\n\n## Token acquisition\n\nSTALE\n")
    sys.modules["_common"].update_section("Token acquisition", text, doc)
    updated = doc.read_text()
    assert "## Token validation\n\nkept" in updated
    assert "STALE" not in updated
    assert updated.count("## Token acquisition") == 1
