"""The FastAPI, Flask and Django pages' first example, run against the emulator as each page says: the example saved
as the file the page names, the page's shell block started, then the quickstart's three curl commands (401, 200,
403), in a clean home directory. Ports are moved to free ones, as in test_quickstart.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_quickstart import BIN, QUICKSTART, free_port, listening, marked, stop, wait_until
from tests.test_docs import ROOT, blocks

pytestmark = [
    pytest.mark.loopback,
    pytest.mark.skipif(shutil.which("curl") is None, reason="the pages use curl"),
]


def clean_env(home: Path) -> dict[str, str]:
    """A new user's environment: no Entra settings, a fresh home (so ~/.cache is empty), the venv on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().startswith(("azuread__", "downstreamapis__", "entra_", "django_", "flask_"))
        and k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    }
    env.pop("XDG_CACHE_HOME", None)
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1")
    return env


class Terminals:
    """Long-running commands, each in its own session (so stopping one stops its children), in ``home``."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.running: list[subprocess.Popen[str]] = []

    def start(self, command: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["bash", "-euc", command],
            cwd=self.home,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.running.append(proc)
        return proc

    def start_emulator(self) -> None:
        emulator = self.start("entra-mw emulator --port 0")
        settings = self.home / ".cache" / "entra-mw" / "emulator.env"
        wait_until(
            lambda: settings.exists() and "ENTRA_EMULATOR_AGENT_USER=" in settings.read_text(),
            emulator,
            "the emulator",
        )

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop_all(self) -> list[str]:
        return [stop(proc) for proc in self.running]


def first_bash(path: Path) -> str:
    return next(b.code for b in blocks(path) if b.info == "bash")


def python_code(path: Path) -> list[str]:
    return [b.code for b in blocks(path) if b.info == "python"]


def write_fastapi(home: Path) -> None:
    (home / "main.py").write_text(python_code(ROOT / "docs" / "fastapi.md")[0])


def write_flask(home: Path) -> None:
    (home / "app.py").write_text(python_code(ROOT / "docs" / "flask.md")[0])


def write_django(home: Path) -> None:
    # "in a project made by `django-admin startproject mysite .`, add the three settings to mysite/settings.py
    # (appending to its INSTALLED_APPS and MIDDLEWARE), save the view as mysite/views.py and route it in urls.py"
    subprocess.run([str(BIN / "django-admin"), "startproject", "mysite", "."], cwd=home, check=True)
    settings_block, views_block = python_code(ROOT / "docs" / "django.md")[:2]
    urls_block = next(b.code for b in blocks(ROOT / "docs" / "django.md") if "urlpatterns" in b.code)
    appended = re.sub(r"^(INSTALLED_APPS|MIDDLEWARE) = ", r"\1 += ", settings_block, flags=re.M)
    with (home / "mysite" / "settings.py").open("a") as settings:
        settings.write("\n" + appended)
    (home / "mysite" / "views.py").write_text(views_block)
    (home / "mysite" / "urls.py").write_text(urls_block)


PAGES = {
    "fastapi": (ROOT / "docs" / "fastapi.md", write_fastapi),
    "flask": (ROOT / "docs" / "flask.md", write_flask),
    "django": (ROOT / "docs" / "django.md", write_django),
}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_example_gives_401_200_403_against_the_emulator(page: str, tmp_path: Path) -> None:
    if page != "fastapi":
        pytest.importorskip(page)
    path, write = PAGES[page]
    home = tmp_path / "home"
    home.mkdir()
    terminals = Terminals(home, clean_env(home))
    requests = next(b.code for kind, b in marked(QUICKSTART) if kind == "requests")
    port = free_port()
    statuses: list[int] = []
    try:
        terminals.start_emulator()
        write(home)
        command = first_bash(path)
        assert "emulator.env" in command and "8000" in command, command
        app = terminals.start(command.replace("8000", str(port)))
        wait_until(lambda: listening(port), app, f"the app of {path.name}")
        for line in filter(None, (x.strip() for x in requests.splitlines())):
            done = terminals.run(line.replace("8000", str(port)).replace("curl -i", "curl -si"))
            assert done.returncode == 0, f"{line}\n{done.stderr}"
            statuses.append(int(done.stdout.split(" ", 2)[1]))
    finally:
        logs = terminals.stop_all()
    assert statuses == [401, 200, 403], logs


def test_mcp_page_server_against_the_emulator(tmp_path: Path) -> None:
    # mcp.md, "Trying it locally": the engine and server blocks saved as server.py with scopes=["Weather.Read"].
    pytest.importorskip("mcp")
    mcp_page = ROOT / "docs" / "mcp.md"
    code = python_code(mcp_page)
    assert 'scopes=["Tools.Use"]' in code[1]
    lines = mcp_page.read_text(encoding="utf-8").splitlines()
    section = lines.index("## Trying it locally")
    serve, calls = [b.code for b in blocks(mcp_page) if b.info == "bash" and b.line > section][:2]
    home = tmp_path / "home"
    home.mkdir()
    terminals = Terminals(home, clean_env(home))
    port = free_port()
    try:
        terminals.start_emulator()
        (home / "server.py").write_text(code[0] + code[1].replace('scopes=["Tools.Use"]', 'scopes=["Weather.Read"]'))
        server = terminals.start(serve.replace("8000", str(port)))
        wait_until(lambda: listening(port), server, "the MCP server")
        # Each curl prints its status on a line of its own after the answer.
        done = terminals.run(calls.replace("8000", str(port)).replace("curl ", "curl -sS -w '\\n[%{http_code}]\\n' "))
    finally:
        logs = terminals.stop_all()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
    assert re.findall(r"^\[(\d{3})\]$", done.stdout, flags=re.M) == ["401", "200", "200"], done.stdout
    assert 'scope="https://mcp.contoso.com/mcp/Weather.Read"' in done.stdout
    assert '"resource":"https://mcp.contoso.com/mcp"' in done.stdout
    assert '"serverInfo":{"name":"contoso-tools"' in done.stdout
