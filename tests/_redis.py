"""A private ``redis-server`` for tests: started on a free loopback port in a temporary directory, stopped by
its owner. Tests that need Redis use the ``redis_url`` / ``redis_server`` fixtures
(``tests/acquisition/conftest.py``), which skip when no Redis can be had, or fail when
``ENTRA_MW_REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["RedisServer", "no_redis", "private_redis"]

_START_TIMEOUT = 10.0


def no_redis(reason: str) -> NoReturn:
    """Skip the test, or fail it when the environment promises Redis (``ENTRA_MW_REQUIRE_REDIS=1``)."""
    if os.environ.get("ENTRA_MW_REQUIRE_REDIS") == "1":
        pytest.fail(f"ENTRA_MW_REQUIRE_REDIS=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``, no persistence. :meth:`stop` is idempotent and
    :meth:`start` brings it back on the same port (to test an outage and the recovery)."""

    def __init__(self, binary: str, directory: Path, port: int | None = None) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port if port is not None else _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", "",
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self._proc.returncode}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {_START_TIMEOUT} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@contextmanager
def private_redis(directory: Path, *, missing: str) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` in ``directory``, stopped on exit; :func:`no_redis` with ``missing`` when
    ``redis-server`` is not installed, or with the reason when it does not start."""
    binary = shutil.which("redis-server")
    if binary is None:
        no_redis(missing)
    server = RedisServer(binary, directory)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        no_redis(f"redis-server could not be started: {exc}")
    try:
        yield server
    finally:
        server.stop()
