"""``python -m example_apps.mcp_server``: run the example against FakeEntra and walk through it with the ``mcp``
SDK's own client; ``--serve`` keeps it running until Ctrl+C. Tokens are never printed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
from typing import Any, TextIO

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from .local import LocalStack
from .server import FORECAST_SCOPE, SERVER_SCOPE


def _text(result: CallToolResult) -> str:
    if result.structured_content is not None:
        return json.dumps(result.structured_content)
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def call_tools(url: str, token: str, calls: list[tuple[str, dict[str, Any]]]) -> list[CallToolResult]:
    """List the tools and make ``calls`` with the SDK's streamable-HTTP client, sending ``token``."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.list_tools()
        return [await session.call_tool(name, args) for name, args in calls]


async def walkthrough(stack: LocalStack, out: TextIO) -> int:
    url = stack.resource
    async with httpx2.AsyncClient() as http:
        response = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        out.write(
            f"1. no token: {response.status_code}, WWW-Authenticate: {response.headers.get('www-authenticate')}\n"
        )
        metadata = (await http.get(f"{stack.base_url}/.well-known/oauth-protected-resource/mcp")).json()
        out.write(f"2. protected-resource metadata: {json.dumps(metadata)}\n")
    narrow = stack.sign_in([SERVER_SCOPE])
    out.write(f"3. alice signed in for {SERVER_SCOPE} only\n")
    (whoami,) = await call_tools(url, narrow, [("whoami", {})])
    out.write(f"   whoami -> {_text(whoami)}\n")
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {narrow}"}) as http:
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "forecast", "arguments": {}}}
        response = await http.post(url, json=call, headers={"Accept": "application/json, text/event-stream"})
    out.write(f"   forecast -> {response.status_code}, WWW-Authenticate: {response.headers.get('www-authenticate')}\n")
    wide = stack.sign_in([SERVER_SCOPE, FORECAST_SCOPE])
    out.write(f"4. alice signed in again, adding {FORECAST_SCOPE}\n")
    (forecast,) = await call_tools(url, wide, [("forecast", {"city": "Seattle"})])
    out.write(f"   forecast -> {_text(forecast)}\n")
    caller = stack.recorder.callers[-1] if stack.recorder.callers else {}
    out.write(f"   the forecast API was called On-Behalf-Of alice by {caller.get('azp')} (aud {caller.get('aud')})\n")
    ok = response.status_code == 403 and not whoami.is_error and not forecast.is_error
    out.write("All steps worked.\n" if ok else "Some steps failed.\n")
    return 0 if ok else 1


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_apps.mcp_server", description=__doc__)
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl+C after the walkthrough")
    args = parser.parse_args(argv)
    with LocalStack() as stack:
        out.write(f"FakeEntra at {stack.served.base_url}; MCP server at {stack.resource}\n")
        code = asyncio.run(walkthrough(stack, out))
        if args.serve:
            out.write("Serving; press Ctrl+C to stop.\n")
            out.flush()
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
