"""The demo's sidecar leg: the same flows once more, through ``entra-mw sidecar``'s HTTP API (as an app in another
language would make them), and what each way costs: the in-process cached header against the loopback HTTP hop."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx2

from .._clock import SystemClock

if TYPE_CHECKING:
    from .._downstream import Downstream
    from ..testing import Scenario, ServedFakeEntra

__all__ = ["run_sidecar_leg"]

_SAMPLES = 200
# Waiting for a server thread to listen is real time (a server, not the engine's clock).
_REAL_TIME = SystemClock()


def _env(served: ServedFakeEntra, scn: Scenario, api_url: str, trust_file: str) -> dict[str, str]:
    """What the official container would be given: its ConfigMap, as environment variables."""
    return {
        "AzureAd__Instance": served.base_url,
        "AzureAd__TenantId": scn.tenant.tenant_id,
        "AzureAd__ClientId": scn.blueprint.app_id,
        "AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
        "AzureAd__ClientCredentials__0__ClientSecret": scn.blueprint_secret,
        "DownstreamApis__weather__BaseUrl": api_url,
        "DownstreamApis__weather__RelativePath": "weatherforecast",
        "DownstreamApis__weather__Scopes__0": f"api://{scn.api.app_id}/Weather.Read",
        "DownstreamApis__weather-app__BaseUrl": api_url,
        "DownstreamApis__weather-app__RelativePath": "weatherforecast",
        "DownstreamApis__weather-app__Scopes__0": f"api://{scn.api.app_id}/.default",
        "DownstreamApis__weather-app__RequestAppToken": "true",
        "Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated": "true",
        "Sidecar__AllowOverrides__CallDownstreamApiUnauthenticated": "true",
        "SSL_CERT_FILE": trust_file,
    }


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def run_sidecar_leg(
    say: Callable[[str], None],
    *,
    served: ServedFakeEntra,
    scenario: Scenario,
    api_url: str,
    trust_file: str,
    user_token: str,
    in_process: Downstream,
) -> bool:
    """Run every flow through the sidecar's ``/DownstreamApi*`` routes and compare the cost of a cached header;
    ``True`` only if every flow worked. Prints no token."""
    import uvicorn

    from .._config import EntraConfig
    from ._factory import create_app

    scn = scenario
    env = _env(served, scn, api_url, trust_file)
    app = create_app(EntraConfig.from_env(env), environ=env)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="entra-mw-sidecar", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10  # real time: a server thread starting
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            say("■ Through the sidecar API: ✗ the sidecar did not start")
            return False
        _REAL_TIME.sleep(0.02)  # real time on purpose: waiting for a server thread to listen
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    ok = True
    try:
        say(f"■ The same flows through the sidecar API (entra-mw sidecar at {base}, the official routes)")
        user = {"Authorization": f"Bearer {user_token}"}
        agent = scn.agent.app_id
        flows: list[tuple[str, str, dict[str, str]]] = [
            ("App-only", "/DownstreamApiUnauthenticated/weather-app", {}),
            ("On-Behalf-Of", "/DownstreamApi/weather", user),
            ("Autonomous agent", f"/DownstreamApiUnauthenticated/weather-app?AgentIdentity={agent}", {}),
            ("Agent On-Behalf-Of", f"/DownstreamApi/weather?AgentIdentity={agent}", user),
            (
                "Agent user",
                f"/DownstreamApiUnauthenticated/weather?AgentIdentity={agent}&AgentUsername={scn.agent_user.upn}",
                {},
            ),
        ]
        with httpx2.Client(base_url=base, timeout=30) as client:
            for title, path, headers in flows:
                route = path.split("?", 1)[0]
                reply = client.post(path, headers=headers)
                envelope: Any = reply.json() if reply.headers.get("content-type", "").startswith("application/") else {}
                status = envelope.get("statusCode") if reply.status_code == 200 else None
                caller = ""
                if status == 200 and isinstance(envelope.get("content"), str):
                    caller = str(json.loads(envelope["content"]).get("caller", ""))
                good = status == 200
                ok = ok and good
                shown = f"statusCode {status}, the weather API served {caller}" if good else reply.text[:200]
                say(f"  {'✓' if good else '✗'} {title:<20} POST {route} → HTTP {reply.status_code}, {shown}")
            ok = _compare_costs(say, client, user, in_process) and ok
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    say("")
    return ok


def _compare_costs(say: Callable[[str], None], client: httpx2.Client, user: dict[str, str], ds: Downstream) -> bool:
    """The cached On-Behalf-Of header, each way: in process, and one loopback HTTP request to the sidecar."""
    reply = client.get("/AuthorizationHeader/weather", headers=user)  # warm the sidecar's cache
    if reply.status_code != 200:
        say(f"  ✗ GET /AuthorizationHeader/weather → HTTP {reply.status_code}")
        return False
    ds.authorization_header("weather")
    # What each way costs, in real time (a measurement, not a decision).
    local: list[float] = []
    for _ in range(_SAMPLES):
        start = time.perf_counter()  # real time: the measurement
        ds.authorization_header("weather")
        local.append(time.perf_counter() - start)  # real time: the measurement
    remote: list[float] = []
    for _ in range(_SAMPLES):
        start = time.perf_counter()  # real time: the measurement
        client.get("/AuthorizationHeader/weather", headers=user)
        remote.append(time.perf_counter() - start)  # real time: the measurement
    inproc, hop = _median_us(local), _median_us(remote)
    say(f"  cost of a cached On-Behalf-Of header (median of {_SAMPLES}):")
    say(f'    in-process  downstream.authorization_header("weather")        {inproc:9.1f} µs')
    ratio = hop / inproc
    say(f"    sidecar     GET /AuthorizationHeader/weather over loopback HTTP {hop:9.1f} µs  ({ratio:,.0f} times)")
    return True
