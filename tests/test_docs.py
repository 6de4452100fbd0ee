"""Docs are code: every fenced ``python`` block of README.md and docs/*.md runs here.

The blocks of one file run in order in one shared namespace, with the environment holding a served FakeEntra's
sidecar-style settings (``AzureAd__Instance``, ``AzureAd__TenantId``, ``AzureAd__ClientId`` of the protected API,
its client secret, ``SSL_CERT_FILE`` = a CA bundle with FakeEntra's CA and the system CAs), so that
``EntraAuth(EntraConfig.from_env())`` works verbatim. A block preceded by the line ``<!-- docs: illustration -->``
is only compiled. Top-level ``await`` is allowed. Functions named ``test_*`` that a file defines are then called,
with the pytest fixtures their parameters name. Tracebacks point at the Markdown file's own line numbers.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from entra_mw import EntraAuth
from entra_mw._emulator import _system_ca_pem, build_directory
from entra_mw.testing import FakeEntra

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
ILLUSTRATION = "<!-- docs: illustration -->"
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    info: str
    code: str
    illustration: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the marker that precedes each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, info = match["fence"], match["info"].strip().split(" ")[0].lower()
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j])
            j += 1
        out.append(Block(path, i + 2, info, "\n".join(body) + "\n", previous == ILLUSTRATION))
        i = j + 1
    return out


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.info in ("python", "py")]


@pytest.fixture(scope="module")
def served_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The sidecar-style settings of a FakeEntra served over HTTPS: the emulator's directory, on the real clock."""
    fake = FakeEntra()
    directory = build_directory(fake)
    folder = tmp_path_factory.mktemp("docs-ca")
    with fake.serve() as served:
        bundle = folder / "ca-bundle.pem"
        bundle.write_bytes(served.ca_pem + b"\n" + _system_ca_pem())
        yield {
            "AzureAd__Instance": served.base_url,
            "AzureAd__TenantId": directory.tenant.tenant_id,
            "AzureAd__ClientId": directory.api.app_id,
            "AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
            "AzureAd__ClientCredentials__0__ClientSecret": directory.api_secret,
            "SSL_CERT_FILE": str(bundle),
        }
    fake.close()


def _compile(block: Block) -> Any:
    # Leading newlines make the line numbers of tracebacks those of the Markdown file.
    source = "\n" * (block.line - 1) + block.code
    return compile(source, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


def _run(block: Block, namespace: dict[str, Any]) -> None:
    result = eval(_compile(block), namespace)  # the project's own documentation
    if inspect.iscoroutine(result):
        asyncio.run(result)


def _close_engines(namespace: dict[str, Any]) -> None:
    for value in list(namespace.values()):
        if isinstance(value, EntraAuth):
            value.close()


def test_every_doc_has_been_found() -> None:
    names = {p.name for p in DOCS}
    assert {"README.md", "quickstart.md", "testing.md", "configuration.md"} <= names
    assert sum(len(python_blocks(p)) for p in DOCS) >= 20


@pytest.mark.loopback
@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_doc_python_blocks_run(
    path: Path, served_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    for name in [n for n in __import__("os").environ if n.lower().startswith(("azuread__", "downstreamapis__"))]:
        monkeypatch.delenv(name)
    for name, value in served_settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(request.getfixturevalue("tmp_path"))
    namespace: dict[str, Any] = {"__name__": f"docs.{path.stem}"}
    try:
        for block in python_blocks(path):
            if block.illustration:
                _compile(block)
                continue
            try:
                _run(block, namespace)
            except Exception as exc:
                raise AssertionError(f"{block.where}: {type(exc).__name__}: {exc}") from exc
        for name, value in list(namespace.items()):
            if name.startswith("test_") and inspect.isfunction(value):
                kwargs = {param: request.getfixturevalue(param) for param in inspect.signature(value).parameters}
                value(**kwargs)
    finally:
        _close_engines(namespace)


def test_no_doc_points_at_private_modules_or_unpublished_documents() -> None:
    private = re.compile(r"entra_mw(\.\w+)*\._\w+")
    unpublished = re.compile(r"\b(DESIGN|spec|STYLE)(\.md)? ?§|\bDESIGN\.md\b|\bspec/")
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not private.search(line), f"{path.name}:{number} names a private module: {line.strip()}"
            assert not unpublished.search(line), f"{path.name}:{number} cites an unpublished document: {line.strip()}"


def test_illustration_marker_only_precedes_code() -> None:
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if line.strip() == ILLUSTRATION:
                following = next((x for x in lines[number + 1 :] if x.strip()), "")
                assert following.startswith("```"), f"{path.name}:{number + 1}: the marker must precede a code block"
