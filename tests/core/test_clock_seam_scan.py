"""The clock seam is the only place the library sleeps or draws random numbers (``entra_mw._clock``); a read of
the real clock anywhere else says why it is real time (network I/O, what MSAL itself reads) in a comment."""

from __future__ import annotations

import ast
from pathlib import Path

import entra_mw

PACKAGE = Path(entra_mw.__file__).parent
CLOCK_MODULE = PACKAGE / "_clock.py"
SLEEPS = {("time", "sleep"), ("asyncio", "sleep"), ("anyio", "sleep"), ("trio", "sleep")}
CLOCK_READS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "time_ns")}


def library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != CLOCK_MODULE)


def dotted(node: ast.expr) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def violations(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    where = path.relative_to(root)
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(alias.name == "random" for alias in node.names):
            found.append(f"{where}:{node.lineno}: imports random")
        elif isinstance(node, ast.ImportFrom) and node.module == "random":
            found.append(f"{where}:{node.lineno}: imports from random")
        elif isinstance(node, ast.ImportFrom) and node.module in ("time", "asyncio", "anyio", "trio"):
            names = {alias.name for alias in node.names}
            if "sleep" in names or (node.module == "time" and names & {"time", "monotonic", "perf_counter"}):
                found.append(f"{where}:{node.lineno}: imports a sleep or a clock read from {node.module}")
        elif isinstance(node, ast.Call):
            name = dotted(node.func)
            if name in SLEEPS:
                found.append(f"{where}:{node.lineno}: calls {name[0]}.{name[1]}")
            elif name in CLOCK_READS:
                context = lines[max(0, node.lineno - 3) : node.lineno]
                if not any("#" in line for line in context):
                    found.append(f"{where}:{node.lineno}: reads the real clock ({name[0]}.{name[1]}) without a comment")
    return found


def test_the_library_sleeps_and_draws_random_numbers_only_on_the_clock_seam() -> None:
    found = [problem for path in library_files() for problem in violations(path)]
    assert found == []


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scan is not vacuous: each forbidden form is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import random\nimport time\nimport anyio\n\n\nasync def f() -> None:\n"
        "    time.sleep(1)\n    await anyio.sleep(1)\n    x = time.monotonic()\n"
        "    # real time: network I/O\n    y = time.monotonic()\n",
        encoding="utf-8",
    )
    found = violations(probe, tmp_path)
    assert sorted(problem.split(": ", 1)[1] for problem in found) == [
        "calls anyio.sleep",
        "calls time.sleep",
        "imports random",
        "reads the real clock (time.monotonic) without a comment",
    ]


def test_fake_entra_latency_waits_on_its_clock_seam() -> None:
    """FakeEntra's latency faults sleep on its ``latency_clock``: a test can make them cost no real time."""
    import httpx2

    from entra_mw.testing import FakeClock, FakeEntra

    waits = FakeClock()
    fake = FakeEntra(clock=FakeClock(), latency_clock=waits)
    tenant = fake.quickstart().tenant.tenant_id
    fake.faults.latency("jwks", 30.0, times=1)
    start = waits.monotonic()
    with httpx2.Client(transport=fake.transport) as client:
        assert client.get(f"https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys").status_code == 200
    assert waits.monotonic() - start == 30.0
