"""What importing a module drags in, seen from a fresh interpreter (this process has imported everything)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable


def loaded_after(imports: str, candidates: Iterable[str]) -> set[str]:
    """The ``candidates`` in ``sys.modules`` after ``import <imports>`` (a comma-separated list) in a new process."""
    code = f"import sys, {imports}\nprint(','.join(m for m in {tuple(candidates)!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(filter(None, out.stdout.strip().split(",")))
