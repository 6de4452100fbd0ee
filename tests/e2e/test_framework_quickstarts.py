"""The FastAPI, Flask and Django pages' first example, run against the emulator as each page says: the example saved
as the file the page names, the page's shell block started, then the quickstart's three curl commands (401, 200,
403), in a clean home directory. Ports are moved to free ones, as in test_quickstart.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e._procs import free_port, wait_until
from tests.e2e._terminals import BIN, Terminals, clean_env
from tests.e2e.test_quickstart import QUICKSTART, listening, marked
from tests.test_docs import ROOT, blocks

pytestmark = [
    pytest.mark.loopback,
    pytest.mark.skipif(shutil.which("curl") is None, reason="the pages use curl"),
]


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
