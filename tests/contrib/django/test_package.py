"""The DRF module imports Django and DRF and no other framework; the public names are the pinned ones."""

from __future__ import annotations

import subprocess
import sys

import entra_mw.contrib.django as integration


def test_the_drf_module_imports_django_and_drf_only() -> None:
    code = (
        "import sys, entra_mw.contrib.django.rest_framework, entra_mw.contrib.django.apps\n"
        "print(','.join(m for m in ('starlette', 'fastapi', 'flask', 'werkzeug', 'mcp') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_names() -> None:
    assert integration.__all__ == sorted(integration.__all__)
    assert set(integration.__all__) == {"EntraMiddleware", "get_context", "require"}
    from django.apps import apps

    assert apps.get_app_config("entra_mw").name == "entra_mw.contrib.django"
