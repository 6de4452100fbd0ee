"""The two flows of ``sidecar-local-development.md`` end to end, with no cloud and no container: a small chat agent
asks the sidecar for an authorization header and calls a weather API protected by this library
(``EntraMiddleware`` under uvicorn), whose verdict is checked.

Autonomous: ``GET /AuthorizationHeaderUnauthenticated/graph-app?AgentIdentity={agentAppId}`` → TR (app-only).
OBO: the user signs in (Tc, audience the blueprint), ``GET /AuthorizationHeader/graph`` with ``Bearer Tc`` and
``?AgentIdentity=`` → TR (delegated, for the user).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from entra_mw import AuthContext, EntraAuth, EntraConfig, Requirement
from entra_mw.asgi import EntraMiddleware
from entra_mw.testing import FakeEntra, Scenario, ServedFakeEntra

from ._support import running, running_sidecar

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(120)]


def weather_api(auth: EntraAuth) -> Starlette:
    """weather-api-dev: validates TR (signature, issuer, expiry, audience) and reports what it accepted."""

    async def forecast(request: Request) -> JSONResponse:
        ctx: AuthContext = request.scope["entra_mw"]
        p = ctx.principal
        assert p is not None
        verdict = {
            "kind": "app-only" if p.is_app else "delegated",
            "idtyp": p.get("idtyp"),
            "caller_app": p.client_id,
            "user": None if p.is_app else p.oid,
            "agent_of": p.agent_blueprint,
        }
        return JSONResponse({"city": request.query_params.get("city"), "forecast": "Sunny, 21 °C", "verdict": verdict})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await auth.aclose()  # its async client lives in this event loop

    app = Starlette(routes=[Route("/weather", forecast)], lifespan=lifespan)
    app.add_middleware(
        EntraMiddleware, auth=auth, requirement=Requirement(scopes=["Weather.Read"], roles=["Weather.Read.All"])
    )
    return app


@dataclass
class ChatAgent:
    """llm-agent-dev, Direct mode: asks the sidecar for a header, then calls the weather API with it. It never
    talks to Entra and never holds a credential."""

    sidecar: str
    weather: str
    agent_id: str

    def get_weather(self, city: str, *, user_token: str | None = None) -> tuple[int, Any]:
        with httpx2.Client(timeout=20) as http:
            if user_token is None:
                reply = http.get(
                    f"{self.sidecar}/AuthorizationHeaderUnauthenticated/graph-app",
                    params={"AgentIdentity": self.agent_id},
                )
            else:
                reply = http.get(
                    f"{self.sidecar}/AuthorizationHeader/graph",
                    params={"AgentIdentity": self.agent_id},
                    headers={"Authorization": f"Bearer {user_token}"},
                )
            assert reply.status_code == 200, reply.text
            header = reply.json()["authorizationHeader"]
            answer = http.get(f"{self.weather}/weather", params={"city": city}, headers={"Authorization": header})
            return answer.status_code, answer.json() if answer.content else None


@pytest.fixture(scope="module")
def stack(served: ServedFakeEntra, scn: Scenario) -> Iterator[ChatAgent]:
    api_auth = EntraAuth(
        EntraConfig(tenant_id=scn.tenant.tenant_id, client_id=scn.api.app_id, instance=served.base_url),
        verify=served.ca_file,
    )
    with running(weather_api(api_auth), lifespan="on") as weather:
        # The sample's docker-compose environment for agent-id-sidecar-dev.
        env = {
            "AzureAd__Instance": served.base_url,
            "AzureAd__TenantId": scn.tenant.tenant_id,
            "AzureAd__ClientId": scn.blueprint.app_id,
            "AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
            "AzureAd__ClientCredentials__0__ClientSecret": scn.blueprint_secret,
            "DownstreamApis__graph-app__BaseUrl": weather,
            "DownstreamApis__graph-app__Scopes__0": f"api://{scn.api.app_id}/.default",
            "DownstreamApis__graph-app__RequestAppToken": "true",
            "DownstreamApis__graph__BaseUrl": weather,
            "DownstreamApis__graph__Scopes__0": f"api://{scn.api.app_id}/Weather.Read",
            "Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated": "true",
            "SSL_CERT_FILE": served.ca_file,
        }
        with running_sidecar(env) as sidecar:
            yield ChatAgent(sidecar=sidecar, weather=weather, agent_id=scn.agent.app_id)


def sign_in(served: ServedFakeEntra, scn: Scenario) -> str:
    """The user signs in to the chat UI and gets Tc for the blueprint (the test user's password grant)."""
    with httpx2.Client(verify=served.ssl_context(), timeout=20) as http:
        reply = http.post(
            f"{served.base_url}{scn.tenant.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "password",
                "client_id": scn.client.app_id,
                "client_secret": scn.client_secret,
                "username": scn.user.upn,
                "password": scn.user_password,
                "scope": f"api://{scn.blueprint.app_id}/access_agent",
            },
        )
    assert reply.status_code == 200, reply.text
    token: str = reply.json()["access_token"]
    return token


def test_autonomous_flow(stack: ChatAgent, scn: Scenario) -> None:
    status, body = stack.get_weather("Dallas")
    assert status == 200, body
    assert body["city"] == "Dallas"
    assert body["verdict"] == {
        "kind": "app-only",
        "idtyp": "app",
        "caller_app": scn.agent.app_id,
        "user": None,
        "agent_of": scn.blueprint.app_id,
    }


def test_obo_flow(stack: ChatAgent, served: ServedFakeEntra, scn: Scenario, fake: FakeEntra) -> None:
    tc = sign_in(served, scn)
    assert fake.decode(tc)["aud"] == scn.blueprint.app_id
    status, body = stack.get_weather("Dallas", user_token=tc)
    assert status == 200, body
    assert body["verdict"] == {
        "kind": "delegated",
        "idtyp": "user",
        "caller_app": scn.agent.app_id,
        "user": scn.user.object_id,
        "agent_of": scn.blueprint.app_id,
    }


def test_the_weather_api_refuses_tc_itself(stack: ChatAgent, served: ServedFakeEntra, scn: Scenario) -> None:
    # Tc is for the blueprint, not for the weather API: passing it through is refused (wrong audience).
    tc = sign_in(served, scn)
    with httpx2.Client(timeout=20) as http:
        answer = http.get(f"{stack.weather}/weather", headers={"Authorization": f"Bearer {tc}"})
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
