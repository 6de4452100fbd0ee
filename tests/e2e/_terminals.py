"""A new user's shell, for the tests that run the documentation's commands: a clean environment with a fresh home
(so the emulator's settings go to an empty ~/.cache), and long-running commands stopped with their children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ._procs import wait_until

BIN = Path(sys.executable).parent


def stop(proc: subprocess.Popen[str]) -> str:
    """Stop ``proc``'s whole session (a shell and what it started); its output."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


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
