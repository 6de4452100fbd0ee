"""Shared by the middleware tests: a raw ASGI driver and a stub engine for cases FakeEntra cannot produce."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from entra_mw import EntraAuth, EntraConfig, Principal
from entra_mw.errors import InvalidToken, ProviderUnavailable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


class StubAuth(EntraAuth):
    """An engine whose verdicts are fixed per token: for outcomes FakeEntra cannot easily produce (503) and
    for counting calls. Everything else in these tests uses real FakeEntra tokens."""

    def __init__(self, verdicts: dict[str, Principal | Exception]) -> None:
        super().__init__(EntraConfig(tenant_id=TENANT, client_id=CLIENT))
        self.verdicts = verdicts
        self.calls: list[str] = []

    def _verdict(self, token: str) -> Principal:
        self.calls.append(token)
        verdict = self.verdicts.get(token, InvalidToken("The token is not valid.", reason="stub"))
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    def validate(self, token: str) -> Principal:
        return self._verdict(token)

    async def avalidate(self, token: str) -> Principal:
        return self._verdict(token)


def stub_auth() -> StubAuth:
    return StubAuth(
        {
            "good": Principal({"oid": "u1", "tid": TENANT, "scp": "Weather.Read", "ver": "2.0"}),
            "down": ProviderUnavailable("Signing keys are unavailable.", reason="no_keys"),
        }
    )


@dataclass
class Result:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    messages: list[Message] = field(default_factory=list)
    scope: Scope | None = None  # the scope the inner app saw, or None when it never ran

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.decode("latin-1").lower() == name.lower():
                return value.decode("latin-1")
        return None


def recording_app(result: Result) -> ASGIApp:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        result.scope = scope
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})

    return app


def http_scope(
    path: str = "/", headers: Sequence[tuple[bytes, bytes]] = (), query: bytes = b"", type_: str = "http"
) -> Scope:
    scope: Scope = {
        "type": type_,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http" if type_ == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": list(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    return scope


async def drive(middleware: ASGIApp, scope: Scope, result: Result, first: Message | None = None) -> Result:
    """Run one request through ``middleware`` with in-memory receive/send; fills ``result``."""
    incoming: list[Message] = [
        first
        if first is not None
        else (
            {"type": "http.request", "body": b"", "more_body": False}
            if scope["type"] == "http"
            else {"type": "websocket.connect"}
        )
    ]

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        return (
            {"type": "http.disconnect"} if scope["type"] == "http" else {"type": "websocket.disconnect", "code": 1000}
        )

    async def send(message: Message) -> None:
        result.messages.append(message)
        kind = message["type"]
        if kind in ("http.response.start", "websocket.http.response.start"):
            result.status = message["status"]
            result.headers = list(message.get("headers", []))
        elif kind in ("http.response.body", "websocket.http.response.body"):
            result.body += message.get("body", b"")

    await middleware(scope, receive, send)
    return result


@dataclass
class Env:
    """An engine on FakeEntra plus tokens: ``token`` is valid and grants ``scope``; ``bad`` is well-formed but
    its signature does not verify."""

    auth: EntraAuth
    token: str
    scope: str
    bad: str
    oid: str


def fake_env(fake: Any) -> Env:
    s = fake.quickstart()
    auth = EntraAuth(
        EntraConfig(tenant_id=s.tenant.tenant_id, client_id=s.api.app_id),
        transport=fake.transport,
        async_transport=fake.async_transport,
        clock=fake.clock,
    )
    token: str = fake.user_token(s.user, client=s.client, resource=s.api, scopes=["Weather.Read"])
    head, payload, signature = token.split(".")
    bad = f"{head}.{payload}.{signature[::-1]}"
    return Env(auth=auth, token=token, scope="Weather.Read", bad=bad, oid=s.user.object_id)
