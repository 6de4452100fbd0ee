"""Shared by the sidecar tests: uvicorn on loopback in a thread, a recording downstream API, and the sidecar's
environment for a served FakeEntra (the official variables, as a ConfigMap would hold them)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from entra_mw import EntraAuth, EntraConfig
from entra_mw._clock import SystemClock
from entra_mw.sidecar import create_app, trust_context
from entra_mw.testing import FakeEntra, Scenario, ServedFakeEntra

from .._uvicorn import uvicorn_thread


class NoWaitClock(SystemClock):
    """The system clock for claims and ages (the sidecar validates real-time tokens), whose retry back-off
    does not wait: the test suite sleeps for no real time on retries."""

    __slots__ = ()

    def sleep(self, seconds: float) -> None:
        pass

    async def asleep(self, seconds: float) -> None:
        import anyio.lowlevel

        await anyio.lowlevel.checkpoint()


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def token_claims(self) -> dict[str, Any]:
        """The claims of the bearer token this request carried (decoded, not verified: the API checks that)."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        assert scheme == "Bearer", self.headers
        payload = token.split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return claims


@dataclass
class Recorder:
    """A downstream API on loopback that records every request it gets."""

    requests: list[Recorded] = field(default_factory=list)

    def app(self) -> Starlette:
        async def record(request: Request) -> Recorded:
            body = await request.body()
            entry = Recorded(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
            self.requests.append(entry)
            return entry

        async def echo(request: Request) -> Response:
            entry = await record(request)
            return JSONResponse(
                {"method": entry.method, "path": entry.path, "query": entry.query, "body": entry.body.decode()},
                headers={"X-Not-A-Content-Header": "dropped", "Content-Language": "en"},
            )

        async def nocontent(request: Request) -> Response:
            await record(request)
            return Response(status_code=204)

        async def chunked(request: Request) -> Response:
            await record(request)

            async def parts() -> AsyncIterator[bytes]:
                yield b'{"chunked":'
                yield b"true}"

            return StreamingResponse(parts(), media_type="application/json")

        async def redirect(request: Request) -> Response:
            await record(request)
            return Response(status_code=302, headers={"Location": "/echo/redirected"})

        async def unavailable(request: Request) -> Response:
            await record(request)
            return Response(
                b"busy",
                status_code=503,
                headers={"Retry-After": "7", "WWW-Authenticate": "Bearer", "Content-Type": "text/plain"},
            )

        return Starlette(
            routes=[
                Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
                Route("/echo", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
                Route("/nocontent", nocontent, methods=["GET", "POST"]),
                Route("/chunked", chunked, methods=["GET", "POST"]),
                Route("/redirect", redirect, methods=["GET", "POST"]),
                Route("/unavailable", unavailable, methods=["GET", "POST"]),
            ]
        )

    def last(self) -> Recorded:
        assert self.requests, "the downstream API got no request"
        return self.requests[-1]


def sidecar_env(served: ServedFakeEntra, scn: Scenario, api_url: str, **extra: str) -> dict[str, str]:
    """The sidecar's variables: the blueprint with its secret, the weather API app-only as ``graph`` (as in
    the Kubernetes article's ConfigMap) and delegated as ``weather``."""
    env = {
        "AzureAd__Instance": served.base_url,
        "AzureAd__TenantId": scn.tenant.tenant_id,
        "AzureAd__ClientId": scn.blueprint.app_id,
        "AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
        "AzureAd__ClientCredentials__0__ClientSecret": scn.blueprint_secret,
        "DownstreamApis__graph__BaseUrl": f"{api_url}/echo/",
        "DownstreamApis__graph__Scopes__0": f"api://{scn.api.app_id}/.default",
        "DownstreamApis__graph__RequestAppToken": "true",
        "DownstreamApis__weather__BaseUrl": f"{api_url}/echo/",
        "DownstreamApis__weather__Scopes__0": f"api://{scn.api.app_id}/Weather.Read",
        "SSL_CERT_FILE": served.ca_file,
        "ASPNETCORE_ENVIRONMENT": "Production",
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def running_sidecar(env: Mapping[str, str]) -> Iterator[str]:
    """``create_app`` for ``env`` under uvicorn on loopback, its engine on a :class:`NoWaitClock` (otherwise
    built as ``create_app`` builds it); yields its base URL."""
    config = dataclasses.replace(EntraConfig.from_env(env), allow_acl_authorization=True)
    auth = EntraAuth(config, verify=trust_context(env), clock=NoWaitClock())
    try:
        with running(create_app(auth=auth, environ=env), lifespan="on") as url:
            yield url
    finally:
        auth.close()


@contextlib.contextmanager
def running(app: Any, *, lifespan: Literal["on", "off"] = "off") -> Iterator[str]:
    """``app`` under uvicorn on loopback (running its shutdown when ``lifespan="on"``); yields its base URL."""
    with uvicorn_thread(app, lifespan=lifespan) as port:
        yield f"http://127.0.0.1:{port}"


def user_token(fake: FakeEntra, scn: Scenario) -> str:
    """Tc: alice's token from the chat client for the blueprint's API (audience = the blueprint)."""
    return fake.user_token(scn.user, client=scn.client, resource=scn.blueprint)
