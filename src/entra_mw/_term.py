"""Terminal output for the command line: colour only on a terminal, and never when ``NO_COLOR`` is set."""

from __future__ import annotations

import os
from typing import TextIO

__all__ = ["Palette"]

_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


class Palette:
    """Wraps text in ANSI colours when ``stream`` is a terminal and the user has not opted out (no-color.org)."""

    def __init__(self, stream: TextIO, *, enabled: bool | None = None) -> None:
        if enabled is None:
            isatty = getattr(stream, "isatty", None)
            enabled = (
                bool(isatty and isatty()) and not os.environ.get("NO_COLOR") and os.environ.get("TERM", "") != "dumb"
            )
        self.enabled = enabled

    def paint(self, text: str, style: str) -> str:
        if not self.enabled:
            return text
        return f"\x1b[{_CODES[style]}m{text}\x1b[0m"

    def bold(self, text: str) -> str:
        return self.paint(text, "bold")

    def dim(self, text: str) -> str:
        return self.paint(text, "dim")

    def good(self, text: str) -> str:
        return self.paint(text, "green")

    def bad(self, text: str) -> str:
        return self.paint(text, "red")

    def warn(self, text: str) -> str:
        return self.paint(text, "yellow")
