"""Running what a user runs: a free loopback port, and waiting for a subprocess to be ready."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    """Poll ``check`` until it holds; fail with ``proc``'s output when it exits first, or after 30 s."""
    deadline = time.monotonic() + 30
    while not check():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{what} exited early:\n{out}{err or ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not start")
        time.sleep(0.05)
