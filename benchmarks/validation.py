"""Token validation benchmark: what a protected request costs, against the floor of one RSA signature check.

Measures, side by side on one machine:

1. raw RSA-2048 PKCS#1 v1.5 SHA-256 verify with ``cryptography`` (the floor);
2. cold validation (key cached, a distinct token each call, so the validated-token cache never hits);
3. a validated-token cache hit;
4. the per-request overhead of ``EntraMiddleware`` on a cache hit, around a trivial Starlette app, driven by a
   raw ASGI loop (no server, no sockets);
5. uvicorn + ``wrk`` requests/s, bare Starlette against Starlette + ``EntraMiddleware`` with a valid token.

Run::

    .venv/bin/python benchmarks/validation.py          # full run; updates docs/performance.md
    .venv/bin/python benchmarks/validation.py --quick  # smoke run, small counts, docs untouched

Keys and tokens come from an in-process FakeEntra (RSA-2048 keys, Entra-shaped v2 tokens).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Stats,
    free_port,
    machine_info,
    measure,
    measure_async_pair,
    measure_each,
    update_section,
    verdict,
)

from entra_mw import EntraAuth, EntraConfig

Scope = MutableMapping[str, Any]

TARGET_COLD = 1.6  # times raw verify
TARGET_HIT = 0.1  # times raw verify
TARGET_MIDDLEWARE_US = 5.0
TARGET_UVICORN = 0.9  # times bare req/s
TARGET_IMPORT = 1.0  # `import entra_mw` against `import jwt` + cryptography's RSA, in a fresh interpreter
X = "\u00d7"  # the multiplication sign, for the report


@dataclass
class Bench:
    fake: Any
    scenario: Any
    auth: EntraAuth
    token: str

    def mint(self) -> str:
        s = self.scenario
        token: str = self.fake.user_token(s.user, client=s.client, resource=s.api, scopes=["Weather.Read"])
        return token

    def close(self) -> None:
        self.auth.close()
        self.fake.close()


def setup() -> Bench:
    from entra_mw.testing import FakeEntra

    fake = FakeEntra()
    scn = fake.quickstart()
    auth = EntraAuth(
        EntraConfig(tenant_id=scn.tenant.tenant_id, client_id=scn.api.app_id),
        transport=fake.transport,
        async_transport=fake.async_transport,
    )
    bench = Bench(fake=fake, scenario=scn, auth=auth, token="")
    bench.token = bench.mint()
    auth.validate(bench.token)  # fetch metadata and keys once
    return bench


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# -- 1..3: validation -----------------------------------------------------------------------------------


def bench_raw_verify(bench: Bench, *, number: int, repeat: int) -> Stats:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header, payload, signature = bench.token.split(".")
    kid = json.loads(_b64decode(header))["kid"]
    public_key = bench.fake.signing_key(kid).private_key.public_key()
    signing_input = f"{header}.{payload}".encode()
    sig = _b64decode(signature)
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()

    def verify() -> None:
        public_key.verify(sig, signing_input, pkcs1, sha256)

    return measure(verify, number=number, repeat=repeat)


def bench_cold(bench: Bench, *, number: int, repeat: int) -> Stats:
    batches = [[bench.mint() for _ in range(number)] for _ in range(repeat)]
    warm = bench.mint()
    bench.auth.validate(warm)
    return measure_each(bench.auth.validate, batches)


def bench_pyjwt(bench: Bench, *, number: int, repeat: int) -> Stats:
    """PyJWT's ``jwt.decode`` with the same key and checks (signature, exp, aud, iss), for context."""
    import jwt

    header = json.loads(_b64decode(bench.token.split(".")[0]))
    public_key = bench.fake.signing_key(header["kid"]).private_key.public_key()
    claims = json.loads(_b64decode(bench.token.split(".")[1]))
    audience, issuer = claims["aud"], claims["iss"]

    def decode(token: str) -> None:
        jwt.decode(token, public_key, algorithms=["RS256"], audience=audience, issuer=issuer)

    batches = [[bench.mint() for _ in range(number)] for _ in range(repeat)]
    return measure_each(decode, batches)


@dataclass
class ImportResult:
    entra_mw: float  # seconds beyond a bare interpreter start
    jwt_crypto: float

    @property
    def ratio(self) -> float:
        return self.entra_mw / self.jwt_crypto


def bench_import(*, repeat: int) -> ImportResult:
    """What `import entra_mw` adds to a fresh interpreter's start, against PyJWT plus cryptography's RSA (what
    any token validator loads); the best of ``repeat`` interleaved starts each, minus a bare start."""
    codes = {
        "bare": "pass",
        "entra_mw": "import entra_mw",
        "jwt": "import jwt, cryptography.hazmat.primitives.asymmetric.rsa",
    }
    best = dict.fromkeys(codes, float("inf"))
    for _ in range(repeat):
        for name, code in codes.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            best[name] = min(best[name], time.perf_counter() - start)
    return ImportResult(entra_mw=best["entra_mw"] - best["bare"], jwt_crypto=best["jwt"] - best["bare"])


def bench_hit(bench: Bench, *, number: int, repeat: int) -> Stats:
    token = bench.token
    validate = bench.auth.validate
    return measure(lambda: validate(token), number=number, repeat=repeat)


# -- 4: middleware overhead (raw ASGI driver) ------------------------------------------------------------


def _trivial_starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", hello)])


def _driver(app: Any, template: Scope) -> Callable[[], Any]:
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    def call() -> Any:
        return app(dict(template), receive, send)

    return call


def _scope(token: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench"),
            (b"accept", b"*/*"),
            (b"authorization", b"Bearer " + token.encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


@dataclass
class MiddlewareResult:
    bare: Stats
    protected: Stats
    noop: Stats
    noop_protected: Stats

    @property
    def overhead_us(self) -> float:
        return (self.protected.min - self.bare.min) * 1e6

    @property
    def overhead_median_us(self) -> float:
        return (self.protected.median - self.bare.median) * 1e6

    @property
    def noop_overhead_us(self) -> float:
        return (self.noop_protected.min - self.noop.min) * 1e6


def bench_middleware(bench: Bench, *, number: int, repeat: int) -> MiddlewareResult:
    from entra_mw.asgi import EntraMiddleware

    template = _scope(bench.token)
    app = _trivial_starlette()
    protected = EntraMiddleware(app, auth=bench.auth)
    bare_s, prot_s = measure_async_pair(
        _driver(app, template), _driver(protected, template), number=number, repeat=repeat
    )

    async def noop(scope: Scope, receive: Any, send: Any) -> None:
        return None

    noop_s, noop_prot_s = measure_async_pair(
        _driver(noop, template),
        _driver(EntraMiddleware(noop, auth=bench.auth), template),
        number=number,
        repeat=repeat,
    )
    return MiddlewareResult(bare=bare_s, protected=prot_s, noop=noop_s, noop_protected=noop_prot_s)


# -- 5: uvicorn under load -------------------------------------------------------------------------------


def serve(kind: str, port: int, token_file: str) -> None:
    """Child process: build the ``bare`` or ``protected`` app, write a token to ``token_file``, serve."""
    import uvicorn

    from entra_mw.asgi import EntraMiddleware

    bench = setup()
    app = _trivial_starlette()
    if kind == "protected":
        app = EntraMiddleware(app, auth=bench.auth)
    Path(token_file).write_text(bench.token)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def _wait_ready(port: int, token_file: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if token_file.exists() and token_file.stat().st_size:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                return token_file.read_text()
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def _wrk(port: int, token: str, duration: float, connections: int) -> float:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "-H",
            f"Authorization: Bearer {token}",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError("could not read wrk's output")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx is not None:
        raise RuntimeError(f"{non2xx.group(1)} requests were refused: the token did not validate")
    return float(found.group(1))


def _python_load(port: int, token: str, duration: float, connections: int) -> float:
    """Fallback load generator (keep-alive connections in threads) when ``wrk`` is not installed."""
    counts = [0] * connections
    stop = time.monotonic() + duration

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"}
        while time.monotonic() < stop:
            conn.request("GET", "/", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start)


@dataclass
class LoadResult:
    tool: str
    bare: float  # best req/s over the bursts
    protected: float
    bare_median: float
    protected_median: float
    bare_cpu_us: float  # server CPU time per request (user + system), median over the bursts
    protected_cpu_us: float
    bursts: int

    @property
    def ratio(self) -> float:
        return self.protected / self.bare if self.bare else 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux); 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(kind: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    token_file = tmp / f"{kind}.token"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--token-file", str(token_file)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")},
    )
    try:
        return proc, port, _wait_ready(port, token_file, proc)
    except BaseException:
        proc.terminate()
        proc.wait(10)
        raise


def bench_uvicorn(*, duration: float, rounds: int, connections: int = 16, tool: str | None = None) -> LoadResult:
    """Both servers run side by side; ``rounds`` bursts of ``duration`` seconds alternate between them (the
    order flips each round) so that drift and noisy neighbours hit both alike. ``tool`` is ``"wrk"`` (the
    default when installed) or ``"python"``."""
    if tool is None:
        tool = "wrk" if shutil.which("wrk") else "python"
    load = _wrk if tool == "wrk" else _python_load
    seconds = max(1, round(duration)) if tool == "wrk" else duration
    rates: dict[str, list[float]] = {"bare": [], "protected": []}
    cpu: dict[str, list[float]] = {"bare": [], "protected": []}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        try:
            for kind in ("bare", "protected"):
                servers[kind] = _start_server(kind, Path(tmp))
            for _, port, token in servers.values():
                load(port, token, min(1.0, duration), connections)  # warm-up
            for i in range(rounds):
                for kind in ("bare", "protected") if i % 2 == 0 else ("protected", "bare"):
                    proc, port, token = servers[kind]
                    before = _cpu_seconds(proc.pid)
                    rate = load(port, token, duration, connections)
                    used = _cpu_seconds(proc.pid) - before
                    rates[kind].append(rate)
                    if rate > 0:
                        cpu[kind].append(used / (rate * seconds))
        finally:
            for proc, _, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    return LoadResult(
        tool=tool,
        bare=max(rates["bare"]),
        protected=max(rates["protected"]),
        bare_median=statistics.median(rates["bare"]),
        protected_median=statistics.median(rates["protected"]),
        bare_cpu_us=statistics.median(cpu["bare"] or [0.0]) * 1e6,
        protected_cpu_us=statistics.median(cpu["protected"] or [0.0]) * 1e6,
        bursts=rounds,
    )


# -- report ----------------------------------------------------------------------------------------------


@dataclass
class Report:
    raw: Stats
    cold: Stats
    pyjwt: Stats
    hit: Stats
    middleware: MiddlewareResult
    load: LoadResult | None
    imports: ImportResult

    def checks(self) -> list[tuple[str, bool, str]]:
        raw = self.raw.min
        out = [
            (
                f"cold validation ≤ {TARGET_COLD}{X} raw verify",
                self.cold.min <= TARGET_COLD * raw,
                f"{self.cold.min / raw:.2f}{X}",
            ),
            (
                f"cache hit ≤ {TARGET_HIT}{X} raw verify",
                self.hit.min <= TARGET_HIT * raw,
                f"{self.hit.min / raw:.3f}{X}",
            ),
            (
                f"middleware overhead on a hit ≤ {TARGET_MIDDLEWARE_US:g} µs",
                self.middleware.overhead_us <= TARGET_MIDDLEWARE_US,
                f"{self.middleware.overhead_us:.2f} µs",
            ),
        ]
        out.append(
            (
                f"`import entra_mw` ≤ {TARGET_IMPORT:g}{X} `import jwt` + cryptography",
                self.imports.ratio <= TARGET_IMPORT,
                f"{self.imports.ratio:.2f}{X}",
            )
        )
        if self.load is not None:
            out.append(
                (
                    f"uvicorn req/s ≥ {TARGET_UVICORN}{X} bare",
                    self.load.ratio >= TARGET_UVICORN,
                    f"{self.load.ratio:.3f}{X}",
                )
            )
        return out

    def markdown(self, command: str) -> str:
        raw = self.raw.min
        mw = self.middleware
        rows = [
            f"| measurement | per operation (min of repeats) | median | {X} raw verify |",
            "|---|---|---|---|",
            f"| raw RSA-2048 PKCS#1 v1.5 SHA-256 verify (`cryptography`) | {raw * 1e6:.1f} µs |"
            f" {self.raw.median * 1e6:.1f} µs | 1.00 |",
            f"| cold validation (key cached, distinct tokens) | {self.cold.min * 1e6:.1f} µs |"
            f" {self.cold.median * 1e6:.1f} µs | {self.cold.min / raw:.2f} |",
            f"| for context: PyJWT `jwt.decode` (signature, exp, aud, iss; distinct tokens) |"
            f" {self.pyjwt.min * 1e6:.1f} µs | {self.pyjwt.median * 1e6:.1f} µs | {self.pyjwt.min / raw:.2f} |",
            f"| validated-token cache hit | {self.hit.min * 1e6:.2f} µs | {self.hit.median * 1e6:.2f} µs |"
            f" {self.hit.min / raw:.3f} |",
            f"| bare Starlette request (raw ASGI driver) | {mw.bare.min * 1e6:.1f} µs |"
            f" {mw.bare.median * 1e6:.1f} µs | |",
            f"| Starlette + `EntraMiddleware`, cache hit | {mw.protected.min * 1e6:.1f} µs |"
            f" {mw.protected.median * 1e6:.1f} µs | |",
            f"| **middleware overhead** (difference) | **{mw.overhead_us:.2f} µs** |"
            f" {mw.overhead_median_us:.2f} µs | |",
            f"| `EntraMiddleware` around a no-op ASGI app, minus the no-op | {mw.noop_overhead_us:.2f} µs |"
            f" {(mw.noop_protected.median - mw.noop.median) * 1e6:.2f} µs | |",
        ]
        rows.append(
            f"| `import entra_mw` in a fresh interpreter (beyond a bare start) | {self.imports.entra_mw * 1e3:.1f} ms |"
            f" | {self.imports.ratio:.2f}{X} `import jwt` + cryptography ({self.imports.jwt_crypto * 1e3:.1f} ms) |"
        )
        parts = ["\n".join(rows)]
        if self.load is not None:
            tool = "`wrk -t1 -c16`" if self.load.tool == "wrk" else "a Python keep-alive load generator (wrk missing)"
            parts.append(
                "\n".join(
                    [
                        f"uvicorn (one worker, `h11`), load from {tool} on the same machine; both servers run "
                        f"side by side and {self.load.bursts} alternating bursts each are measured:",
                        "",
                        "| app | req/s (best burst) | req/s (median) | server CPU per request (median) |",
                        "|---|---|---|---|",
                        f"| bare Starlette | {self.load.bare:,.0f} | {self.load.bare_median:,.0f} |"
                        f" {self.load.bare_cpu_us:.0f} µs |",
                        f"| Starlette + `EntraMiddleware` (valid token, cache hit) | {self.load.protected:,.0f} |"
                        f" {self.load.protected_median:,.0f} | {self.load.protected_cpu_us:.0f} µs |",
                        f"| ratio | {self.load.ratio:.3f} |"
                        f" {self.load.protected_median / self.load.bare_median:.3f} | |",
                    ]
                )
            )
        checks = "\n".join(f"- {verdict(ok)}: {name} (measured {got})" for name, ok, got in self.checks())
        parts.append("Targets:\n\n" + checks)
        today = datetime.date.today().isoformat()
        parts.append(f"Measured {today} on {machine_info(['cryptography', 'PyJWT', 'starlette', 'uvicorn', 'httpx2'])}")
        parts.append(
            "Reproduce (`wrk` from the distribution's package, e.g. `apt-get install wrk`):\n\n"
            f"```\n{command}\n"
            ".venv/bin/python benchmarks/validation.py --quick  # smoke run, docs untouched\n```"
        )
        parts.append(
            "How: keys and tokens come from an in-process FakeEntra; each figure is the minimum over "
            "several repeats of a timed loop (garbage collection off, as `timeit` does), with the median "
            "beside it. The cold figure validates a freshly minted token per call, so the validated-token "
            "cache never hits. The middleware overhead is the difference between the protected and the bare "
            "app driven by the same raw ASGI loop, their repeats interleaved."
        )
        parts.append(
            "Where the cold path goes beyond the RSA verify (about 15 µs, measured stage by stage on this "
            "machine with a 1.4 KB Entra-shaped token): base64url decoding of the payload and signature in "
            "strict mode (about 3.5 µs), JSON with duplicate-name rejection (about 3.5 µs; without the check "
            "the C scanner alone takes about 2.7 µs), the depth and claim-type checks (about 1.4 µs), splitting "
            "and encoding (about 0.8 µs), and the lifetime, audience, issuer and key-issuer rules with the cache "
            "insert (about 3 µs). The decoding and parsing are C code already; dropping the duplicate-name and "
            "depth checks would reach only about 1.7 times the verify, so the 1.6 times target is not met "
            "without weakening the hardening described in validation.md, and the checks stay."
        )
        return "\n\n".join(parts)


# Calls per timed repeat and repeats, per measurement: the smoke run and the full run.
QUICK_COUNTS: dict[str, dict[str, int]] = {
    "raw": {"number": 50, "repeat": 3},
    "cold": {"number": 10, "repeat": 2},
    "pyjwt": {"number": 10, "repeat": 2},
    "hit": {"number": 200, "repeat": 3},
    "middleware": {"number": 200, "repeat": 3},
}
FULL_COUNTS: dict[str, dict[str, int]] = {
    "raw": {"number": 2000, "repeat": 7},
    "cold": {"number": 300, "repeat": 5},
    "pyjwt": {"number": 300, "repeat": 5},
    "hit": {"number": 50_000, "repeat": 7},
    "middleware": {"number": 20_000, "repeat": 9},
}


def run(*, quick: bool, uvicorn: bool = True) -> Report:
    bench = setup()
    try:
        counts = QUICK_COUNTS if quick else FULL_COUNTS
        raw = bench_raw_verify(bench, **counts["raw"])
        cold = bench_cold(bench, **counts["cold"])
        pyjwt = bench_pyjwt(bench, **counts["pyjwt"])
        hit = bench_hit(bench, **counts["hit"])
        mw = bench_middleware(bench, **counts["middleware"])
    finally:
        bench.close()
    imports = bench_import(repeat=2 if quick else 9)
    load = bench_uvicorn(duration=1.0 if quick else 3.0, rounds=2 if quick else 8) if uvicorn else None
    return Report(raw=raw, cold=cold, pyjwt=pyjwt, hit=hit, middleware=mw, load=load, imports=imports)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts; do not touch docs/performance.md")
    parser.add_argument("--no-uvicorn", action="store_true", help="skip the uvicorn + wrk measurement")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    parser.add_argument("--serve", choices=["bare", "protected"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.token_file)
        return 0
    report = run(quick=args.quick, uvicorn=not args.no_uvicorn)
    print(report.markdown("benchmarks/validation.py"))
    print()
    failed = False
    for name, ok, got in report.checks():
        print(f"{verdict(ok)}  {name}: {got}")
        failed |= not ok
    if not args.quick and not args.no_docs:
        command = ".venv/bin/python benchmarks/validation.py" + (" --no-uvicorn" if args.no_uvicorn else "")
        update_section("Token validation", report.markdown(command))
        print("\nupdated docs/performance.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
