"""Without Chromium the browser tests skip with a reason — and fail under ENTRA_MW_REQUIRE_BROWSER=1 (CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import _chromium


def test_missing_browser_skips_or_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to find
    monkeypatch.setattr(_chromium, "CHROMIUM", ("no-such-browser",))
    monkeypatch.delenv("ENTRA_MW_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        _chromium.require_chromium()
    monkeypatch.setenv("ENTRA_MW_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="ENTRA_MW_REQUIRE_BROWSER=1"):
        _chromium.require_chromium()
