"""Sidecar benchmark: what the HTTP hop costs, beside the same work in process.

Measures, on one machine:

1. ``GET /AuthorizationHeader/{api}`` for one caller whose On-Behalf-Of token is cached, and ``GET /Validate``
   with a token already validated: requests per second and p50/p99 latency under a bounded loopback load
   (a fixed number of requests from a fixed number of keep-alive connections, stopped early after a few
   seconds). The sidecar runs as users run it, ``entra-mw sidecar`` in its own process, configured by the
   official variables, against FakeEntra served over HTTPS;
2. beside them, the in-process figures for the same work: ``downstream.authorization_header(api)`` (cache hit)
   and ``auth.validate(token)`` (validated-token cache hit).

Run::

    .venv/bin/python benchmarks/sidecar.py          # full run; updates the "Sidecar" section of docs/performance.md
    .venv/bin/python benchmarks/sidecar.py --quick  # smoke run, tiny counts, docs untouched
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx2
from _common import Stats, free_port, machine_info, measure, update_section

from entra_mw import ClientSecret, DownstreamApi, EntraAuth, EntraConfig
from entra_mw.testing import FakeEntra, Scenario, ServedFakeEntra

SECTION = "Sidecar (HTTP) beside in process"


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """One bounded load run: ``requests`` sent over ``connections`` keep-alive connections."""

    requests: int
    connections: int
    seconds: float
    latencies: tuple[float, ...]
    errors: int

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    header_http: Load
    validate_http: Load
    header_local: Stats
    validate_local: Stats

    def markdown(self, script: str) -> str:
        def row(name: str, load: Load, local: Stats) -> str:
            return (
                f"| {name} | {load.rps:,.0f} | {load.percentile(50) * 1e3:.2f} ms | {load.percentile(99) * 1e3:.2f} ms "
                f"| {local.min * 1e6:.2f} µs | {load.percentile(50) / local.min:,.0f} |"
            )

        load = self.header_http
        return "\n".join(
            [
                f"`entra-mw sidecar` (uvicorn, one process) on loopback, driven by an httpx2 asyncio client in another "
                f"process on the same machine: {load.requests:,} requests per endpoint over {load.connections} "
                "keep-alive connections (stopped after a few seconds at most), after a warm-up. The in-process "
                "column is the same work as a library call (minimum of repeats).",
                "",
                "| endpoint (cache hit) | req/s | p50 | p99 | in process, per call | p50 ÷ in process |",
                "|---|---|---|---|---|---|",
                row("`GET /AuthorizationHeader/{api}` (OBO token cached)", self.header_http, self.header_local),
                row("`GET /Validate` (token already validated)", self.validate_http, self.validate_local),
                "",
                f"Errors during the runs: {self.header_http.errors + self.validate_http.errors}.",
                "",
                f"Measured {datetime.date.today().isoformat()} on " + machine_info(["starlette", "uvicorn", "httpx2"]),
                "",
                "Reproduce:",
                "",
                "```",
                f".venv/bin/python {script}",
                f".venv/bin/python {script} --quick  # smoke run, docs untouched",
                "```",
                "",
                "The hop is what an app in another language pays per header; an app in Python calling the library "
                "pays the in-process figure.",
            ]
        )


@dataclass
class Setup:
    fake: FakeEntra
    scn: Scenario
    served: ServedFakeEntra
    token: str
    env: dict[str, str]


@contextmanager
def setup() -> Iterator[Setup]:
    fake = FakeEntra()
    scn = fake.quickstart()
    with fake.serve() as served:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AzureAd__Instance": served.base_url,
            "AzureAd__TenantId": scn.tenant.tenant_id,
            "AzureAd__ClientId": scn.blueprint.app_id,
            "AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
            "AzureAd__ClientCredentials__0__ClientSecret": scn.blueprint_secret,
            "DownstreamApis__weather__BaseUrl": "https://weather.example/",
            "DownstreamApis__weather__Scopes__0": f"api://{scn.api.app_id}/Weather.Read",
            "SSL_CERT_FILE": served.ca_file,
        }
        token = fake.user_token(scn.user, client=scn.client, resource=scn.blueprint)
        try:
            yield Setup(fake=fake, scn=scn, served=served, token=token, env=env)
        finally:
            fake.close()


@contextmanager
def sidecar_process(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "entra_mw.cli", "sidecar", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"entra-mw sidecar exited: {proc.stderr.read() if proc.stderr else b''!r}")
            try:
                if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("entra-mw sidecar did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stderr is not None:
            proc.stderr.close()


async def _load(url: str, path: str, token: str, *, requests: int, connections: int, max_seconds: float) -> Load:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for _ in range(connections * 4):  # warm-up: connections open, caches full
            (await client.get(path, headers=headers)).raise_for_status()
        latencies: list[float] = []
        errors = 0
        remaining = requests
        deadline = time.perf_counter() + max_seconds

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                start = time.perf_counter()
                response = await client.get(path, headers=headers)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    return Load(requests=requests, connections=connections, seconds=elapsed, latencies=tuple(latencies), errors=errors)


def load(url: str, path: str, token: str, *, requests: int, connections: int, max_seconds: float) -> Load:
    return asyncio.run(_load(url, path, token, requests=requests, connections=connections, max_seconds=max_seconds))


def in_process(s: Setup, *, number: int, repeat: int) -> tuple[Stats, Stats]:
    config = EntraConfig(
        tenant_id=s.scn.tenant.tenant_id,
        client_id=s.scn.blueprint.app_id,
        credentials=[ClientSecret(s.scn.blueprint_secret)],
        downstream_apis={
            "weather": DownstreamApi(
                base_url="https://weather.example/", scopes=(f"api://{s.scn.api.app_id}/Weather.Read",)
            )
        },
    )
    with EntraAuth(config, transport=s.fake.transport, async_transport=s.fake.async_transport) as auth:
        principal = auth.validate(s.token)
        auth.downstream(principal, s.token).authorization_header("weather")
        header = measure(
            lambda: auth.downstream(principal, s.token).authorization_header("weather"), number=number, repeat=repeat
        )
        validate = measure(lambda: auth.validate(s.token), number=number, repeat=repeat)
    return header, validate


def run(*, quick: bool) -> Report:
    requests, connections, max_seconds = (40, 2, 2.0) if quick else (3_000, 8, 5.0)
    number, repeat = (50, 2) if quick else (20_000, 5)
    with setup() as s, sidecar_process(s.env) as url:
        header_http = load(
            url,
            "/AuthorizationHeader/weather",
            s.token,
            requests=requests,
            connections=connections,
            max_seconds=max_seconds,
        )
        validate_http = load(
            url, "/Validate", s.token, requests=requests, connections=connections, max_seconds=max_seconds
        )
        header_local, validate_local = in_process(s, number=number, repeat=repeat)
    return Report(
        header_http=header_http,
        validate_http=validate_http,
        header_local=header_local,
        validate_local=validate_local,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny counts; docs/performance.md is not written")
    args = parser.parse_args()
    report = run(quick=args.quick)
    text = report.markdown("benchmarks/sidecar.py")
    print(text)
    if not args.quick:
        update_section(SECTION, text)


if __name__ == "__main__":
    main()
