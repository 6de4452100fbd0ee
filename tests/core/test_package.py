from __future__ import annotations

import subprocess
import sys

import entra_mw


def test_all_is_sorted_and_resolvable() -> None:
    assert entra_mw.__all__ == sorted(entra_mw.__all__)
    for name in entra_mw.__all__:
        assert getattr(entra_mw, name) is not None


def test_all_equals_the_public_names() -> None:
    # Every public name the package binds is exported, and nothing else (submodules aside).
    import types

    public = {
        name
        for name, value in vars(entra_mw).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    lazy = {"Downstream"}  # resolved by the module's __getattr__ on first use
    assert public | lazy == set(entra_mw.__all__) - {"__version__"}


def test_every_public_error_is_exported_from_the_root() -> None:
    from entra_mw import errors

    for name in errors.__all__:
        assert getattr(entra_mw, name) is getattr(errors, name)


def test_core_imports_no_framework_and_no_msal() -> None:
    code = (
        "import sys, entra_mw, entra_mw.asgi, entra_mw.wsgi, entra_mw.errors, entra_mw.credentials\n"
        "heavy = ('starlette', 'django', 'flask', 'fastapi', 'mcp', 'msal', 'redis', 'httpx2', 'jwt')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version_lives_in_one_place() -> None:
    from entra_mw._version import __version__

    assert entra_mw.__version__ == __version__
