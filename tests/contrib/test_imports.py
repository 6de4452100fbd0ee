"""Each contrib module imports exactly one framework (starlette and fastapi count as one)."""

from __future__ import annotations

import pytest

from .._imports import loaded_after

FRAMEWORKS = ("starlette", "fastapi", "flask", "werkzeug", "django", "mcp")


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("entra_mw.contrib", ()),
        ("entra_mw.contrib.fastapi", ("starlette", "fastapi")),
        ("entra_mw.contrib.flask", ("flask", "werkzeug")),
        ("entra_mw.contrib.mcp", ("mcp", "starlette")),  # the mcp SDK is built on starlette
        ("entra_mw.contrib.django", ("django",)),
        ("entra_mw.contrib.django.signin", ("django",)),
        ("entra_mw.contrib.starlette", ("starlette",)),
    ],
)
def test_one_framework_per_module(module: str, allowed: tuple[str, ...]) -> None:
    for name in allowed:
        pytest.importorskip(name)
    loaded = loaded_after(module, FRAMEWORKS)
    assert loaded <= set(allowed), f"{module} imports {sorted(loaded - set(allowed))}"
    if allowed:
        assert allowed[0] in loaded
