"""docs/sidecar.md's "Try it locally", run as a new user would: the emulator, the quickstart's app as the downstream
API, the sidecar as the emulator's agent blueprint, and the page's curl calls, in a clean home directory.

The page's two shell blocks are run as written, with the ports moved to free ones (the emulator gets ``--port 0``,
the app's 8000 and the sidecar's 5000 become free ports) so that parallel runs stay apart.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e._procs import free_port, wait_until
from tests.e2e._terminals import Terminals, clean_env
from tests.e2e.test_quickstart import QUICKSTART, listening, marked
from tests.test_docs import ROOT, blocks

SIDECAR = ROOT / "docs" / "sidecar.md"

pytestmark = [
    pytest.mark.loopback,
    pytest.mark.skipif(shutil.which("curl") is None, reason="the page uses curl"),
]


def try_it_locally() -> tuple[str, str]:
    """The two shell blocks of the "Try it locally" section: the sidecar's terminal, then the caller's."""
    lines = SIDECAR.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Try it locally")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    found = [b.code for b in blocks(SIDECAR) if b.info == "bash" and start < b.line - 1 < end]
    assert len(found) == 2, found
    return found[0], found[1]


def test_sidecar_try_it_locally_works_as_written(tmp_path: Path) -> None:
    sidecar_block, caller_block = try_it_locally()
    assert "entra-mw sidecar" in sidecar_block and "localhost:5000" in caller_block
    home = tmp_path / "home"
    home.mkdir()
    terminals = Terminals(home, clean_env(home))
    app_port, sidecar_port = free_port(), free_port()
    try:
        terminals.start_emulator()
        # The quickstart's app.py, started the way the quickstart starts it: the sidecar's downstream API.
        quickstart = list(marked(QUICKSTART))
        (home / "app.py").write_text(next(b.code for kind, b in quickstart if kind == "file app.py"))
        app_command = next(b.code for kind, b in quickstart if kind == "background" and "uvicorn app:app" in b.code)
        app = terminals.start(app_command.replace("8000", str(app_port)))
        wait_until(lambda: listening(app_port), app, "the quickstart's app")
        sidecar = terminals.start(
            sidecar_block.replace("8000", str(app_port)).replace(
                "entra-mw sidecar", f"entra-mw sidecar --port {sidecar_port}"
            )
        )
        wait_until(lambda: listening(sidecar_port), sidecar, "the sidecar")
        # Each curl prints its body, then a marker line with its status, so every call is checked.
        done = terminals.run(
            caller_block.replace("localhost:5000", f"localhost:{sidecar_port}").replace(
                "curl ", "curl -sS -w '\\n[%{http_code}]\\n' "
            )
        )
    finally:
        logs = terminals.stop_all()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
    out = done.stdout
    assert out.count("[200]") == 5, f"{out}\n{logs}"
    assert "Healthy" in out
    assert '"protocol":"Bearer"' in out
    assert out.count('{"authorizationHeader":"Bearer ') == 2
    assert '"statusCode":200' in out and '\\"hello\\":\\"alice@contoso.onmicrosoft.com\\"' in out
    # The sidecar really acted as the blueprint: On-Behalf-Of alice, then as the agent for her.
    assert "flow=obo" in logs[2] and "flow=agent_obo" in logs[2], logs[2]
