"""Token cache hit cost and memory per cached token.

Run: ``python benchmarks/acquisition_cache.py [--quick]``

Measures, with 1, 10,000 and 100,000 cached users (OBO entries, each keyed by its own caller token):

* ``TokenRequest.cache_key()`` on a fresh request (OBO: SHA-256 of a ~1.6 KB caller token; app-only);
* an L1 hit through ``TokenCache.get_or_fetch`` with the request's key already computed, and with a fresh
  ``TokenRequest`` per call (what a web request pays: build the request, hash the caller token, look up);
* an L1 hit through ``await TokenCache.aget_or_fetch`` (asyncio);
* memory held per cached token (tracemalloc), with and without the access-token string itself.

Figures are the best of several rounds, in microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import secrets
import statistics
import time
import tracemalloc
from collections.abc import Callable

from entra_mw._acquisition._types import AccessToken, TokenRequest
from entra_mw._acquisition.cache import TokenCache

TENANT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPES = ("https://graph.microsoft.com/User.Read", "https://graph.microsoft.com/Mail.Read")
TOKEN_CHARS = 1_800  # a typical Entra access token (header, ~25 claims, RS256 signature)
ASSERTION_CHARS = 1_600


def jwt_like(chars: int) -> str:
    return ("eyJ" + secrets.token_urlsafe(chars))[:chars]


def obo(assertion: str) -> TokenRequest:
    return TokenRequest(flow="obo", scopes=SCOPES, client_id=CLIENT, tenant=TENANT, user_assertion=assertion)


def fetch(req: TokenRequest) -> AccessToken:
    return AccessToken(token=jwt_like(TOKEN_CHARS), expires_on=time.time() + 3600, scopes=req.scopes, tenant=TENANT)


def per_call(fn: Callable[[], object], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def bench_users(users: int, calls: int, rounds: int) -> dict[str, float]:
    cache = TokenCache(max_entries=max(users, 1))
    assertions = [jwt_like(ASSERTION_CHARS - 8) + f"{i:08d}" for i in range(users)]
    for a in assertions:
        cache.get_or_fetch(obo(a), fetch)
    rng = random.Random(7)
    sample = [rng.choice(assertions) for _ in range(1024)]
    prebuilt = [obo(a) for a in sample]
    for req in prebuilt:
        req.cache_key()
    i = 0

    def hit_prebuilt() -> object:
        nonlocal i
        i = (i + 1) & 1023
        return cache.get_or_fetch(prebuilt[i], fetch)

    def hit_fresh() -> object:
        nonlocal i
        i = (i + 1) & 1023
        return cache.get_or_fetch(obo(sample[i]), fetch)

    def build_only() -> object:
        nonlocal i
        i = (i + 1) & 1023
        return obo(sample[i])

    async def ahits() -> float:
        nonlocal i
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls):
                i = (i + 1) & 1023
                await cache.aget_or_fetch(prebuilt[i], afetch)
            best = min(best, (time.perf_counter() - start) / calls)
        return best * 1e6

    async def afetch(req: TokenRequest) -> AccessToken:
        return fetch(req)

    fetches_before = cache.stats.fetches
    result = {
        "hit (key computed)": per_call(hit_prebuilt, calls, rounds),
        "hit (fresh request)": per_call(hit_fresh, calls, rounds),
        "  of which building the request": per_call(build_only, calls, rounds),
        "async hit (key computed)": asyncio.run(ahits()),
    }
    assert cache.stats.fetches == fetches_before, "a hit benchmark fetched"
    return result


def bench_key(calls: int, rounds: int) -> dict[str, float]:
    assertion = jwt_like(ASSERTION_CHARS)
    build_obo = per_call(lambda: obo(assertion), calls, rounds)
    key_obo = per_call(lambda: obo(assertion).cache_key(), calls, rounds) - build_obo

    def app() -> TokenRequest:
        return TokenRequest(flow="app", scopes=("https://graph.microsoft.com/.default",), client_id=CLIENT, tenant=TENANT)

    build_app = per_call(app, calls, rounds)
    key_app = per_call(lambda: app().cache_key(), calls, rounds) - build_app
    memo = obo(assertion)
    memo.cache_key()
    return {
        "cache_key() OBO, fresh request": key_obo,
        "cache_key() app-only, fresh request": key_app,
        "cache_key() again (memoised)": per_call(memo.cache_key, calls, rounds),
    }


def memory_per_token(entries: int) -> tuple[float, float]:
    cache = TokenCache(max_entries=entries)
    requests = [obo(jwt_like(ASSERTION_CHARS - 8) + f"{i:08d}") for i in range(entries)]
    tokens = [fetch(r) for r in requests]
    it = iter(tokens)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for req in requests:
        cache.get_or_fetch(req, lambda _r: next(it))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # The requests, their caller tokens and the AccessTokens existed before; what the cache adds is its key
    # string, its entry and its map slot. A real cache also keeps the AccessToken alive (object + token string).
    overhead = (after - before) / entries
    token_object = _size_of_access_token(tokens[0])
    return overhead, overhead + token_object


def _size_of_access_token(token: AccessToken) -> float:
    import sys

    return sys.getsizeof(token) + sys.getsizeof(token.token) + sys.getsizeof(token.scopes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    args = parser.parse_args()
    calls, rounds = (20_000, 3) if args.quick else (100_000, 7)

    print(f"TokenCache L1 hit cost (best of {rounds} rounds x {calls:,} calls, µs/call)")
    print()
    for name, value in bench_key(calls, rounds).items():
        print(f"  {name:<40} {value:6.2f}")
    print()
    table: dict[int, dict[str, float]] = {}
    for users in (1, 10_000, 100_000):
        table[users] = bench_users(users, calls, rounds)
        gc.collect()
    names = list(table[1])
    print(f"  {'cached users':<40} {'1':>8} {'10,000':>8} {'100,000':>8} {'100k/1':>8}")
    for name in names:
        row = [table[u][name] for u in (1, 10_000, 100_000)]
        print(f"  {name:<40} {row[0]:8.2f} {row[1]:8.2f} {row[2]:8.2f} {row[2] / row[0]:8.2f}")
    print()
    overheads = [memory_per_token(10_000) for _ in range(3)]
    cache_only = statistics.median(o for o, _ in overheads)
    total = statistics.median(t for _, t in overheads)
    print("Memory per cached token (10,000 entries, tracemalloc)")
    print(f"  cache bookkeeping (key, entry, map slot)        {cache_only:8.0f} bytes")
    print(f"  plus the AccessToken with a {TOKEN_CHARS:,}-char token     {total:8.0f} bytes")
    print(f"  => 100,000 cached tokens ~ {total * 100_000 / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
