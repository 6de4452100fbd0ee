"""Token cache hit cost and memory per cached token.

Run: ``python benchmarks/acquisition_cache.py [--quick]``

Measures, with 1, 10,000 and 100,000 cached users (OBO entries, each keyed by its own caller token):

* ``TokenRequest.l1_key()`` on a fresh request (OBO: SHA-256 of a ~1.6 KB caller token; app-only);
* an L1 hit through ``TokenCache.get_or_fetch`` with the request's key already computed, and with a fresh
  ``TokenRequest`` per call (what a web request pays: build the request, hash the caller token, look up);
* an L1 hit through ``await TokenCache.aget_or_fetch`` (asyncio);
* memory held per cached token (tracemalloc), with and without the access-token string itself;
* with ``--redis URL``: an L1 miss answered by Redis, plain and encrypted.

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


def _copy(text: str) -> str:
    return text[:-1] + text[-1:]


def fetch(req: TokenRequest) -> AccessToken:
    return AccessToken(token=jwt_like(TOKEN_CHARS), expires_on=time.time() + 3600, scopes=req.scopes, tenant=TENANT)


def timed(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def timed_over(fn: Callable[[TokenRequest], object], items: list[TokenRequest]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items) * 1e6


class Population:
    """A cache holding ``users`` OBO tokens, and 1,024 of those users picked at random to look up."""

    def __init__(self, users: int) -> None:
        self.cache = TokenCache(max_entries=users)
        assertions = [jwt_like(ASSERTION_CHARS - 8) + f"{i:08d}" for i in range(users)]
        for a in assertions:
            self.cache.get_or_fetch(obo(a), fetch)
        rng = random.Random(7)
        # Each looked-up request carries its own copy of its caller's token, as requests off the network do; so
        # the single-user case is not flattered by hashing one string that never leaves the CPU cache.
        self.sample = [_copy(rng.choice(assertions)) for _ in range(1024)]
        self.prebuilt = [obo(a) for a in self.sample]
        for req in self.prebuilt:
            req.l1_key()

    def fresh(self, calls: int) -> list[TokenRequest]:
        """``calls`` new requests (their keys not computed yet), as each web request builds its own."""
        return [obo(self.sample[i & 1023]) for i in range(calls)]

    def measure(self, calls: int) -> dict[str, float]:
        cache, prebuilt, sample = self.cache, self.prebuilt, self.sample
        fetches = cache.stats.fetches
        i = 0

        def hit_prebuilt() -> object:
            nonlocal i
            i = (i + 1) & 1023
            return cache.get_or_fetch(prebuilt[i], fetch)

        def build() -> object:
            nonlocal i
            i = (i + 1) & 1023
            return obo(sample[i])

        async def afetch(req: TokenRequest) -> AccessToken:
            return fetch(req)

        async def ahits() -> float:
            nonlocal i
            start = time.perf_counter()
            for _ in range(calls):
                i = (i + 1) & 1023
                await cache.aget_or_fetch(prebuilt[i], afetch)
            return (time.perf_counter() - start) / calls * 1e6

        result = {
            "hit, key already computed": timed(hit_prebuilt, calls),
            "hit, new request (incl. l1_key)": timed_over(lambda r: cache.get_or_fetch(r, fetch), self.fresh(calls)),
            "async hit, key already computed": asyncio.run(ahits()),
            "(building a TokenRequest, for scale)": timed(build, calls),
        }
        assert cache.stats.fetches == fetches, "a hit benchmark fetched"
        return result


def bench_key(calls: int) -> dict[str, float]:
    assertion = jwt_like(ASSERTION_CHARS)
    obos = [obo(assertion) for _ in range(calls)]
    apps = [
        TokenRequest(flow="app", scopes=("https://graph.microsoft.com/.default",), client_id=CLIENT, tenant=TENANT)
        for _ in range(calls)
    ]
    memo = obo(assertion)
    memo.l1_key()
    return {
        "l1_key() OBO, new request": timed_over(TokenRequest.l1_key, obos),
        "l1_key() app-only, new request": timed_over(TokenRequest.l1_key, apps),
        "l1_key() again (memoised)": timed(memo.l1_key, calls),
    }


def bench_redis(url: str, calls: int) -> dict[str, float]:
    """An L1 miss answered by Redis (GET + decode), plain and AES-GCM sealed; and a write."""
    from entra_mw._acquisition._redis import RedisStore

    result: dict[str, float] = {}
    for label, key in (("plain", None), ("encrypted", secrets.token_urlsafe(32))):
        prefix = f"entra_mw_bench:{secrets.token_hex(4)}:"
        writer = TokenCache(l2=RedisStore(url, prefix=prefix, encryption_key=key))
        reader_store = RedisStore(url, prefix=prefix, encryption_key=key)
        reader = TokenCache(l2=reader_store)
        reqs = [obo(jwt_like(ASSERTION_CHARS - 8) + f"{i:08d}") for i in range(calls)]
        start = time.perf_counter()
        for req in reqs:
            writer.get_or_fetch(req, fetch)
        result[f"L1 miss + fetch + Redis SET ({label})"] = (time.perf_counter() - start) / calls * 1e6
        start = time.perf_counter()
        for req in reqs:
            reader.get_or_fetch(req, fetch)
        result[f"L1 miss, Redis hit ({label})"] = (time.perf_counter() - start) / calls * 1e6
        assert reader.stats.fetches == 0, "the reader should have been served by Redis"
        for req in reqs:
            reader_store._sync_client().delete(reader_store.redis_key(req.cache_key()))
        writer.close()
        reader.close()
    return result


def best(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {name: min(r[name] for r in rounds) for name in rounds[0]}


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
    parser.add_argument("--redis", metavar="URL", help="also measure the Redis L2 (e.g. redis://127.0.0.1:6379/0)")
    args = parser.parse_args()
    calls, rounds = (20_000, 3) if args.quick else (100_000, 7)
    sizes = (1, 10_000, 100_000)

    print(f"TokenCache L1 hit cost (best of {rounds} interleaved rounds x {calls:,} calls, µs/call)")
    print()
    for name, value in best([bench_key(calls) for _ in range(rounds)]).items():
        print(f"  {name:<40} {value:6.2f}")
    print()
    populations = {users: Population(users) for users in sizes}
    # Rounds interleave the sizes so that noise from other processes hits every size alike.
    runs: dict[int, list[dict[str, float]]] = {users: [] for users in sizes}
    for _ in range(rounds):
        for users in sizes:
            gc.collect()
            runs[users].append(populations[users].measure(calls))
    table = {users: best(runs[users]) for users in sizes}
    print(f"  {'cached users':<40} {'1':>8} {'10,000':>8} {'100,000':>8} {'100k/1':>8}")
    for name in table[1]:
        row = [table[u][name] for u in sizes]
        print(f"  {name:<40} {row[0]:8.2f} {row[1]:8.2f} {row[2]:8.2f} {row[2] / row[0]:8.2f}")
    del populations
    gc.collect()
    print()
    overheads = [memory_per_token(10_000) for _ in range(3)]
    cache_only = statistics.median(o for o, _ in overheads)
    total = statistics.median(t for _, t in overheads)
    print("Memory per cached token (10,000 entries, tracemalloc)")
    print(f"  cache bookkeeping (key, entry, map slot)        {cache_only:8.0f} bytes")
    print(f"  plus the AccessToken with a {TOKEN_CHARS:,}-char token     {total:8.0f} bytes")
    print(f"  => 100,000 cached tokens ~ {total * 100_000 / 2**20:.0f} MiB")
    if args.redis:
        print()
        print("Redis L2 (loopback, µs/call)")
        for name, value in bench_redis(args.redis, 2_000).items():
            print(f"  {name:<40} {value:8.1f}")


if __name__ == "__main__":
    main()
