"""The sidecar benchmark runs end to end with tiny counts (timings are not asserted, docs not written)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .test_benchmarks_smoke import load_benchmark

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]


@pytest.fixture
def sidecar_bench() -> Iterator[ModuleType]:
    yield from load_benchmark("sidecar")


def test_sidecar_benchmark_runs(sidecar_bench: ModuleType, tmp_path: Path) -> None:
    report = sidecar_bench.run(quick=True)
    for load in (report.header_http, report.validate_http):
        assert load.errors == 0
        assert load.latencies
        assert load.rps > 0
        assert 0 < load.percentile(50) <= load.percentile(99)
    assert report.header_local.min > 0
    assert report.validate_local.min > 0
    text = report.markdown("benchmarks/sidecar.py")
    assert "`GET /AuthorizationHeader/{api}` (OBO token cached)" in text
    assert "`GET /Validate`" in text

    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n## Token validation\n\nkept\n")
    sys.modules["_common"].update_section(sidecar_bench.SECTION, text, doc)
    updated = doc.read_text()
    assert "## Token validation\n\nkept" in updated
    assert updated.count(f"## {sidecar_bench.SECTION}") == 1
