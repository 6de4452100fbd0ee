"""The Django integration imports Django (and DRF for its DRF module) and no other framework; its public names
are the pinned ones."""

from __future__ import annotations

import subprocess
import sys

import entra_mw.contrib.django as integration


def test_imports_no_other_framework() -> None:
    code = (
        "import sys, entra_mw.contrib\n"
        "assert 'django' not in sys.modules\n"
        "import entra_mw.contrib.django, entra_mw.contrib.django.apps, entra_mw.contrib.django.checks\n"
        "import entra_mw.contrib.django.rest_framework\n"
        "print(','.join(m for m in ('starlette', 'flask', 'fastapi', 'mcp') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_names() -> None:
    assert integration.__all__ == sorted(integration.__all__)
    assert set(integration.__all__) == {"EntraMiddleware", "get_context", "require"}
    from django.apps import apps

    assert apps.get_app_config("entra_mw").name == "entra_mw.contrib.django"
