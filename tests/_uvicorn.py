"""uvicorn on an ephemeral 127.0.0.1 port, in a thread, for tests that need a real socket."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Literal


@contextlib.contextmanager
def uvicorn_thread(app: Any, *, lifespan: Literal["on", "off"] = "off", **options: Any) -> Iterator[int]:
    """Serve ``app`` until the context exits (running its shutdown when ``lifespan="on"``); yields the port.
    ``options`` go to ``uvicorn.Config`` (``ws=...``)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan=lifespan, log_level="critical", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started or not thread.is_alive():
                break
            thread.join(0.01)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        port: int = server.servers[0].sockets[0].getsockname()[1]
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
