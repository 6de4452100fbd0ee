"""docs/quickstart.md's "try it in two minutes", run as a new user would: its shell blocks in a clean home directory.

Markers in the Markdown say what each block is: ``<!-- docs: file NAME -->`` (save the Python block as NAME),
``<!-- docs: background -->`` (a long-running command: the emulator, then each app), ``<!-- docs: requests -->``
(one ``curl`` per line; the comment ends with the expected status) and ``<!-- docs: install -->`` (checked, not
run: the test environment already has the package and no network). Two substitutions keep parallel runs apart:
the emulator gets ``--port 0`` and the app's port 8000 (in commands and saved files) becomes a free port.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_docs import ROOT, Block, blocks

from ._procs import free_port, wait_until

QUICKSTART = ROOT / "docs" / "quickstart.md"
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.loopback,
    pytest.mark.skipif(shutil.which("curl") is None, reason="the quickstart uses curl"),
]


def marked(path: Path) -> Iterator[tuple[str, Block]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    for block in blocks(path):
        fence = block.line - 2
        previous = next((lines[j].strip() for j in range(fence - 1, -1, -1) if lines[j].strip()), "")
        match = re.fullmatch(r"<!-- docs: (.+?) -->", previous)
        yield (match[1] if match else ""), block


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_install_block_names_the_extras() -> None:
    install = [b for kind, b in marked(QUICKSTART) if kind == "install"]
    assert len(install) == 1
    text = install[0].code
    assert 'pip install "entra-mw[demo]"' in text and 'pip install -e ".[demo]"' in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("uvicorn") for dep in extras["demo"])
    assert any(dep.startswith("starlette") for dep in extras["demo"])


def test_quickstart_gives_401_200_403_for_asgi_and_wsgi(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().startswith(("azuread__", "downstreamapis__", "entra_")) and k not in ("SSL_CERT_FILE",)
    }
    env.pop("XDG_CACHE_HOME", None)
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1")
    running: list[subprocess.Popen[str]] = []
    app: subprocess.Popen[str] | None = None
    port = 0
    statuses: list[int] = []
    files: dict[str, str] = {}

    def start(command: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["bash", "-euc", command],
            cwd=home,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        running.append(proc)
        return proc

    try:
        for kind, block in marked(QUICKSTART):
            if kind.startswith("file "):
                files[kind.split(" ", 1)[1]] = block.code
            elif kind == "background" and "entra-mw emulator" in block.code:
                emulator = start(block.code.replace("entra-mw emulator", "entra-mw emulator --port 0"))
                settings = home / ".cache" / "entra-mw" / "emulator.env"
                # The settings are written once the emulator listens; their last line ends the file.
                wait_until(
                    lambda: settings.exists() and "ENTRA_EMULATOR_AGENT_USER=" in settings.read_text(),
                    emulator,
                    "the emulator",
                )
            elif kind == "background":
                if app is not None:  # "Stop uvicorn, then ..."
                    stop(app)
                port = free_port()
                for name, code in files.items():
                    (home / name).write_text(code.replace("8000", str(port)))
                app = start(block.code.replace("8000", str(port)))
                wait_until(lambda: listening(port), app, f"the app of {block.where}")
            elif kind == "requests":
                for line in filter(None, (x.strip() for x in block.code.splitlines())):
                    expected = int(re.search(r"#\s*(\d{3})\b", line)[1])  # type: ignore[index]
                    done = subprocess.run(
                        ["bash", "-euo", "pipefail", "-c", line.replace("8000", str(port))],
                        cwd=home,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=False,
                    )
                    assert done.returncode == 0, f"{block.where}: {line}\n{done.stderr}"
                    status = int(done.stdout.split(" ", 2)[1])
                    assert status == expected, f"{block.where}: {line}\n{done.stdout}\n{done.stderr}"
                    statuses.append(status)
    finally:
        logs = [stop(proc) for proc in running]
    assert statuses == [401, 200, 403, 401, 200, 403], logs
    assert "token grant=password client=weather-client user=alice@" in logs[0]
