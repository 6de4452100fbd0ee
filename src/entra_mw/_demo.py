"""``entra-mw demo``: the sidecar's local-development story (chat agent → weather API) with no cloud and no container.

FakeEntra serves over HTTPS on loopback; a weather API (Starlette + ``EntraMiddleware``) runs under uvicorn over
HTTPS; the agent (the blueprint app) uses ``Downstream`` to call it in every flow. A tracing transport shows each
token request as it goes over the wire and the decoded claims of each token (signatures elided, tokens never
shown); the API reports its verdict. The command exits 0 only if every step worked.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs

import httpx2

from ._clock import SystemClock
from ._config import DownstreamApi, EntraConfig
from ._engine import EntraAuth
from ._requirements import Requirement
from ._term import Palette
from ._tokenview import decode_token
from .credentials import ClientSecret
from .errors import EntraError

# Waiting for a server thread to listen is real time (a server, not the engine's clock).
_REAL_TIME = SystemClock()

__all__ = ["run_demo"]

_SHOWN_CLAIMS = (
    "aud",
    "iss",
    "ver",
    "idtyp",
    "azp",
    "appid",
    "oid",
    "sub",
    "tid",
    "upn",
    "preferred_username",
    "scp",
    "roles",
    "xms_par_app_azp",
    "xms_act_fct",
    "xms_sub_fct",
    "xms_idrel",
)
_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"


@dataclass
class _Trace:
    out: TextIO
    verbose: bool
    palette: Palette
    names: dict[str, str] = field(default_factory=dict)
    token_requests: int = 0
    labels: list[str] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def detail(self, text: str) -> None:
        if self.verbose:
            self.say(text)

    def name(self, value: Any) -> str:
        if isinstance(value, str) and value in self.names:
            return f"{value} ({self.names[value]})"
        return json.dumps(value) if not isinstance(value, str) else value

    def label_ids(self, text: str) -> str:
        """``text`` with each known GUID followed by what it is: ``3087a41e-… (agent identity)``."""
        for value, what in self.names.items():
            if len(value) == 36 and value in text:
                text = text.replace(value, f"{value} ({what})")
        return text

    def claims(self, token: str, indent: str = "        ") -> None:
        try:
            header, claims = decode_token(token)
        except ValueError as exc:
            self.detail(f"{indent}(undecodable token: {exc})")
            return
        shown = {k: claims[k] for k in _SHOWN_CLAIMS if k in claims}
        lifetime = ""
        if isinstance(claims.get("exp"), int) and isinstance(claims.get("iat"), int):
            lifetime = f", lifetime {int(claims['exp']) - int(claims['iat'])} s"
        self.detail(f"{indent}header: alg={header.get('alg')} kid={header.get('kid')}  signature: <elided>{lifetime}")
        for key, value in shown.items():
            self.detail(f"{indent}{key:<16} {self.name(value)}")


class _TracingTransport(httpx2.BaseTransport):
    """Wraps the real HTTPS transport and narrates every token request and the token it returned."""

    def __init__(self, inner: httpx2.BaseTransport, trace: _Trace) -> None:
        self._inner = inner
        self._trace = trace

    def close(self) -> None:
        self._inner.close()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        is_token = request.method == "POST" and request.url.path.endswith("/token")
        form: dict[str, list[str]] = {}
        if is_token:
            body = request.read()
            form = parse_qs(body.decode("utf-8", "replace"))
        response = self._inner.handle_request(request)
        if not is_token:
            return response
        response.read()
        self._narrate(form, response)
        return response

    def _narrate(self, form: dict[str, list[str]], response: httpx2.Response) -> None:
        trace = self._trace
        trace.token_requests += 1

        def one(name: str) -> str:
            return form.get(name, [""])[0]

        grant = one("grant_type")
        scope = one("scope")
        if one("fmi_path"):
            label = "T1 (blueprint → exchange token for the agent)"
        elif grant == "client_credentials" and scope == _EXCHANGE_SCOPE:
            label = "T2 (agent → its own exchange token)"
        elif grant == "client_credentials":
            label = "TR (app-only resource token)"
        elif grant.endswith("jwt-bearer"):
            label = "TR (On-Behalf-Of the user)"
        elif grant == "user_fic":
            label = "TR (agent user token via user_fic)"
        elif grant == "password":
            label = "Tc (the user signs in to the chat client)"
        else:
            label = grant
        trace.labels.append(label.split(" ")[0])
        if one("client_secret"):
            proof = "client_secret"
        elif one("client_assertion"):
            proof = "client_assertion (a signed token)"
        else:
            proof = "none"
        trace.detail(f"    → token request #{trace.token_requests}: {label}")
        trace.detail(f"        grant_type={grant} client_id={trace.name(one('client_id'))} proof={proof}")
        extras = [f"{k}={one(k)}" for k in ("fmi_path", "requested_token_use", "username", "user_id") if one(k)]
        trace.detail(f"        scope={scope}" + (" " + " ".join(extras) if extras else ""))
        try:
            payload = json.loads(response.text)
        except ValueError:
            payload = {}
        if response.status_code != 200 or not isinstance(payload, dict) or "access_token" not in payload:
            error = payload.get("error") if isinstance(payload, dict) else None
            trace.detail(f"      ← HTTP {response.status_code} {error or ''}")
            return
        trace.detail(f"      ← HTTP 200, expires_in={payload.get('expires_in')}; access token claims:")
        trace.claims(str(payload["access_token"]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _weather_api(auth: EntraAuth, required: Requirement, verdicts: list[str], tmp: Path) -> Iterator[str]:
    """The protected weather API under uvicorn over HTTPS; yields its base URL."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from .asgi import EntraMiddleware
    from .testing._keys import tls_material

    async def forecast(request: Request) -> JSONResponse:
        ctx = request.scope["entra_mw"]
        p = ctx.principal
        kind = "app-only" if p.is_app else "delegated"
        who = p.preferred_username or p.get("upn") or p.oid
        agent = f", agent of blueprint {p.agent_blueprint}" if p.is_agent else ""
        granted = " ".join(sorted(p.scopes)) if p.scopes else " ".join(sorted(p.roles))
        verdicts.append(f"accepted: {kind} token for {who}, caller app {p.client_id}{agent}; granted [{granted}]")
        return JSONResponse({"forecast": [{"day": "Mon", "summary": "Sunny", "celsius": 21}], "caller": who})

    material = tls_material(("127.0.0.1",))
    (tmp / "api-cert.pem").write_bytes(material.cert_pem)
    key_path = tmp / "api-key.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(material.key_pem)
    (tmp / "api-ca.pem").write_bytes(material.ca_pem)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await auth.astartup()  # fetch metadata and keys before serving
        yield
        await auth.aclose()  # the async client lives in this event loop: close it here

    app = Starlette(routes=[Route("/weatherforecast", forecast)], lifespan=lifespan)
    app.add_middleware(EntraMiddleware, auth=auth, requirement=required)
    port = _free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ssl_certfile=str(tmp / "api-cert.pem"),
        ssl_keyfile=str(key_path),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="weather-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10  # real time: a server thread starting
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the weather API did not start")
        _REAL_TIME.sleep(0.02)  # real time on purpose: waiting for a server thread to listen
    try:
        yield f"https://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_demo(*, out: TextIO, verbose: bool = True, palette: Palette | None = None) -> int:
    """Run every flow; return 0 only if all of them worked."""
    from .testing import FakeEntra

    trace = _Trace(out=out, verbose=verbose, palette=palette or Palette(out, enabled=False))
    results: list[tuple[str, bool]] = []
    fake = FakeEntra()
    scn = fake.quickstart()
    trace.names.update(
        {
            scn.api.app_id: "weather-api",
            scn.client.app_id: "chat client",
            scn.blueprint.app_id: "agent blueprint",
            scn.agent.app_id: "agent identity",
            scn.tenant.tenant_id: scn.tenant.domain,
            scn.user.object_id: scn.user.upn,
            scn.agent_user.object_id: scn.agent_user.upn,
            scn.blueprint.sp_object_id: "blueprint SP",
            scn.agent.sp_object_id: "agent SP",
            f"api://{scn.api.app_id}": "weather-api App ID URI",
            "api://AzureADTokenExchange": "token exchange",
        }
    )
    with tempfile.TemporaryDirectory(prefix="entra-mw-demo-") as tmpdir, fake.serve() as served:
        tmp = Path(tmpdir)
        verdicts: list[str] = []
        api_auth = EntraAuth(
            EntraConfig(tenant_id=scn.tenant.tenant_id, client_id=scn.api.app_id, instance=served.base_url),
            verify=served.ca_file,
        )
        requirement = Requirement(scopes=["Weather.Read"], roles=["Weather.Read.All"])
        with _weather_api(api_auth, requirement, verdicts, tmp) as api_url:
            bundle = tmp / "trust.pem"
            bundle.write_bytes(Path(served.ca_file).read_bytes() + (tmp / "api-ca.pem").read_bytes())
            trust = ssl.create_default_context(cafile=str(bundle))
            trace.say("entra-mw demo: chat client → agent (blueprint) → weather API, every flow on a local FakeEntra")
            trace.say(f"  FakeEntra (HTTPS)   {served.base_url}   tenant {scn.tenant.domain}")
            trace.say(f"  weather API (HTTPS) {api_url}   requires scope Weather.Read or role Weather.Read.All")
            trace.say("")
            transport = _TracingTransport(httpx2.HTTPTransport(verify=trust), trace)
            agent_config = EntraConfig(
                tenant_id=scn.tenant.tenant_id,
                client_id=scn.blueprint.app_id,
                instance=served.base_url,
                credentials=[ClientSecret(scn.blueprint_secret)],
                downstream_apis={
                    "weather": DownstreamApi(
                        base_url=api_url,
                        relative_path="weatherforecast",
                        scopes=(f"api://{scn.api.app_id}/Weather.Read",),
                    ),
                    "weather-app": DownstreamApi(
                        base_url=api_url,
                        relative_path="weatherforecast",
                        scopes=(f"api://{scn.api.app_id}/.default",),
                        request_app_token=True,
                    ),
                },
            )
            agent_auth = EntraAuth(agent_config, transport=transport)
            total = 8  # the sign-in and the seven calls below
            obtained: dict[str, int] = {}  # token kind → the step that requested it first

            def heading(title: str) -> None:
                trace.say(trace.palette.bold(f"■ {len(results) + 1}/{total} {title}"))

            def verdict(title: str, ok: bool, text: str) -> None:
                mark = trace.palette.good("✓") if ok else trace.palette.bad("✗")
                trace.say(f"  {mark} {text}")
                trace.say("")
                results.append((title, ok))

            def step(
                title: str,
                action: Callable[[], httpx2.Response],
                *,
                expect: int = 200,
                tokens: tuple[str, ...] = (),
            ) -> None:
                """Run one call; ``tokens`` are the token requests the heading promises (T1, T2, TR)."""
                heading(title)
                before, seen = len(verdicts), len(trace.labels)
                try:
                    response = action()
                except EntraError as exc:
                    verdict(title, False, f"failed: {type(exc).__name__}: {exc}")
                    return
                made = trace.labels[seen:]
                number = len(results) + 1
                for label in made:
                    obtained.setdefault(label, number)
                for label in tokens:
                    if label not in made:
                        where = f" in step {obtained[label]}" if label in obtained else " earlier"
                        trace.say(f"    {label}: no request; the {label} obtained{where} came from the cache")
                for line in verdicts[before:]:
                    trace.say(f"  weather API: {trace.label_ids(line)}")
                if response.status_code != 200:
                    challenge = response.headers.get("www-authenticate", "")
                    trace.say(f"  weather API: refused with HTTP {response.status_code} {challenge}")
                ok = response.status_code == expect
                text = f"HTTP {response.status_code}" + ("" if ok else f" (expected {expect})")
                if not tokens and made:
                    ok = False
                    text += f"; {len(made)} token request(s) were made, none expected"
                verdict(title, ok, text)

            try:
                # The user signs in to the chat client, which gets Tc for the agent (audience: the blueprint).
                title = "Sign-in: alice gets Tc for the agent (the chat client's token request)"
                heading(title)
                with httpx2.Client(transport=transport, timeout=10) as client:
                    reply = client.post(
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
                tc = reply.json().get("access_token") if reply.status_code == 200 else None
                if not isinstance(tc, str):
                    verdict(title, False, f"sign-in failed: HTTP {reply.status_code}")
                    return 1
                principal = agent_auth.validate(tc)
                scopes = " ".join(sorted(principal.scopes))
                verdict(title, True, f"the agent validated Tc: user {principal.preferred_username}, scopes [{scopes}]")
                caller = agent_auth.downstream(principal, tc)
                app_only = agent_auth.downstream()
                step(
                    "App-only: the blueprint calls the API with its own client credentials (TR)",
                    lambda: app_only.call("weather-app"),
                    tokens=("TR",),
                )
                step(
                    "On-Behalf-Of: the blueprint exchanges Tc for a weather API token (TR)",
                    lambda: caller.call("weather"),
                    tokens=("TR",),
                )
                step(
                    "Autonomous agent: T1 (fmi_path), then the agent's client credentials (TR)",
                    lambda: app_only.for_agent(scn.agent.app_id).call("weather-app"),
                    tokens=("T1", "TR"),
                )
                step(
                    "Agent On-Behalf-Of: T1, then OBO as the agent identity with Tc (TR)",
                    lambda: caller.for_agent(scn.agent.app_id).call("weather"),
                    tokens=("T1", "TR"),
                )
                step(
                    "Agent user: T1, T2, then user_fic for the agent's user account (TR)",
                    lambda: app_only.for_agent(scn.agent.app_id, username=scn.agent_user.upn).call("weather"),
                    tokens=("T1", "T2", "TR"),
                )
                step(
                    "Cached: the same On-Behalf-Of call again (no token request expected)",
                    lambda: caller.call("weather"),
                )

                def forward_tc() -> httpx2.Response:
                    with httpx2.Client(verify=trust, timeout=10) as raw:
                        return raw.get(f"{api_url}weatherforecast", headers={"Authorization": f"Bearer {tc}"})

                step(
                    "Never forward: Tc sent straight to the weather API is refused (wrong audience)",
                    forward_tc,
                    expect=401,
                )
                assert len(results) == total, "the step count in the headings is out of date"
                from .sidecar._demo_leg import run_sidecar_leg  # the same flows through the sidecar's HTTP API

                if not run_sidecar_leg(trace.say, served=served, scenario=scn, api_url=api_url, trust_file=str(bundle), user_token=tc, in_process=caller):  # noqa: E501
                    results.append(("the same flows through the sidecar API", False))
            finally:
                agent_auth.close()
                api_auth.close()
    passed = sum(ok for _, ok in results)
    summary = f"{passed} of {len(results)} steps worked"
    summary = trace.palette.good(summary) if passed == len(results) else trace.palette.bad(summary)
    trace.say(f"{summary}; {trace.token_requests} token requests ({', '.join(trace.labels)}).")
    return 0 if results and passed == len(results) else 1
