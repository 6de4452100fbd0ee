"""The token cache in front of MSAL (DESIGN §3 "Our own cache sits in front of MSAL", §5 "Acquisition").

MSAL Python never reads its cache for OBO or ``user_fic`` and scans its cache linearly under one lock
(spec §3.8), so every token the engine hands out goes through this cache first:

* **L1**: a bounded in-process map keyed by :meth:`TokenRequest.l1_key`, evicting the least recently used
  entries (second-chance approximation). A hit is a dictionary lookup under a lock that is never held across
  I/O; it never leaves the event loop. It reads few objects (a 64-byte key, one entry, the token's text): the
  work does not grow with the number of entries, only the CPU cache misses on those objects do.
* **L2** (optional): a store shared by replicas, normally :class:`~entra_mw._acquisition._redis.RedisStore`.
  Order: L1 → L2 → fetch; a fetched token is put in L1 (waking the callers that wait for it), then in L2.
* **Lifetime**: an entry is fresh until ``expires_on - refresh_margin``, as MSAL treats tokens as expired
  five minutes early (spec §3.8), or until Entra's ``refresh_in`` (``AccessToken.refresh_on``) when that is
  earlier. A token with less than twice the margin left when it enters the cache is fresh for half of what it
  has left instead, so that short-lived tokens are still cached. It is never served at or past ``expires_on``,
  nor, for On-Behalf-Of, past the caller token's ``exp`` plus ``caller_skew`` (the OBO token stands for that
  token: it must not outlive it).
* **Refresh due**: past its fresh window a still-valid token is due for a refresh: one caller refreshes while
  every other caller keeps getting the cached token. If the refresh fails with
  :class:`~entra_mw.errors.TokenAcquisitionError` or :class:`~entra_mw.errors.ProviderUnavailable` (Entra down,
  throttling, hanging), the still-valid token is served to that caller too (one warning per attempt, attempts
  at most every ``refresh_retry`` seconds).
* Tokens obtained with a claims challenge are handed to their caller and not stored: their key names the
  claims, and no later request asks for those claims without bypassing the cache.
* **Single flight per key** (:mod:`entra_mw._singleflight`): concurrent misses on one key cause one L2 read
  and one fetch; the others wait for it (threads on an event, tasks on their own loop, whichever thread the
  fetch runs on) and share its token or its error. Errors are never cached. A wait is bounded
  (``wait_timeout``): past it, the waiter fetches on its own.

Sync and async callers share one implementation: :meth:`TokenCache._flow` is a flow (:mod:`entra_mw._flow`)
that makes every decision and yields the I/O it needs as typed steps (wait, L2 read, fetch, L2 write);
:meth:`get_or_fetch` and :meth:`aget_or_fetch` only run that I/O.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from .._clock import Clock, SystemClock
from .._flow import Flow, arun, run
from .._singleflight import Flight
from ..errors import ConfigurationError, ProviderUnavailable, TokenAcquisitionError

if TYPE_CHECKING:
    from .._config import EntraConfig
    from ._types import AccessToken, TokenRequest

__all__ = ["CacheStats", "CachedToken", "L2Store", "TokenCache"]

logger = logging.getLogger("entra_mw.acquisition.cache")


class L2Store(Protocol):
    """A second-level store shared by replicas. ``key`` is a canonical :meth:`TokenRequest.cache_key`.

    Implementations never raise for an unavailable backend: a failed read is a miss (``None``), a failed write
    is skipped. ``ttl`` is how long, in seconds, the entry is worth keeping.
    """

    def get(self, key: str) -> AccessToken | None: ...

    def set(self, key: str, token: AccessToken, ttl: float) -> None: ...

    async def aget(self, key: str) -> AccessToken | None: ...

    async def aset(self, key: str, token: AccessToken, ttl: float) -> None: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheStats:
    """Counters since the cache was built.

    ``hits``: answered from L1 (by :meth:`TokenCache.peek` too). ``misses``: no usable L1 entry.
    ``l2_hits``: misses answered by L2.
    ``fetches``: calls to the fetch function. ``refreshes``: proactive refreshes started (counted in
    ``fetches`` too when they reach the network rather than finding a fresher token in L2).
    ``stale_served``: a token due for a refresh served while a refresh was under way, cooling down or had
    failed.
    ``errors``: fetches that raised.
    """

    hits: int
    misses: int
    l2_hits: int
    fetches: int
    refreshes: int
    stale_served: int
    errors: int


class CachedToken(float):
    """An L1 entry, as :meth:`TokenCache.peek` returns it: ``token`` and ``token_type`` (those of ``access``,
    all an ``Authorization`` header needs), ``access``, the :class:`AccessToken`, and ``owner``, the ``oid`` of
    the caller an On-Behalf-Of token stands for (``None`` otherwise).

    With many entries, each distinct object a hit reads is a cache miss, so a hit reads as few as it can: the
    entry's float value is the time (epoch seconds) from which a hit no longer serves it (the earlier of
    ``usable_until`` and ``refresh_at``) and it holds the token's text directly, so a hit reads the key, this
    object and the text, not also a float and the ``AccessToken``.
    """

    __slots__ = ("access", "owner", "refresh_at", "retry_at", "token", "token_type", "usable_until", "used")

    access: AccessToken
    owner: str | None
    token: str
    token_type: str
    usable_until: float
    refresh_at: float | None
    retry_at: float | None
    used: bool

    def __new__(
        cls, access: AccessToken, usable_until: float, refresh_at: float | None, owner: str | None = None
    ) -> CachedToken:
        self = super().__new__(cls, usable_until if refresh_at is None else min(usable_until, refresh_at))
        self.access = access
        self.owner = owner
        self.token = access.token
        self.token_type = sys.intern(access.token_type)  # "Bearer": one shared string, not one per entry
        self.usable_until = usable_until
        self.refresh_at = refresh_at
        self.retry_at = None  # monotonic; no refresh attempt before it (after a failed one)
        self.used = False  # hit since it last reached the old end of L1: spared once by eviction
        return self

    def __repr__(self) -> str:
        return f"CachedToken(usable_until={self.usable_until!r}, refresh_at={self.refresh_at!r})"


# What the flow asks its driver to do (the driver sends back the result, or throws the exception, into it).
@dataclass(frozen=True, slots=True)
class _Wait:
    """Wait for another caller's fetch of this key -> whether it ended in time."""

    flight: Flight[AccessToken]


@dataclass(frozen=True, slots=True)
class _L2Get:
    """Read the shared store -> ``AccessToken | None``."""


@dataclass(frozen=True, slots=True)
class _Fetch:
    """Ask the fetch function -> ``AccessToken``."""


@dataclass(frozen=True, slots=True)
class _L2Set:
    """Write the shared store -> ``None``."""

    token: AccessToken
    ttl: float


_Step = _Wait | _L2Get | _Fetch | _L2Set
_L2_GET: Final = _L2Get()
_FETCH: Final = _Fetch()
_SECOND_CHANCES: Final = 8
_REFRESH_ERRORS: Final = (TokenAcquisitionError, ProviderUnavailable)


class TokenCache:
    """The token cache: bounded L1 in memory, optional shared L2, single flight per key, proactive refresh.

    ::

        cache = TokenCache(max_entries=10_000)
        token = cache.get_or_fetch(request, acquirer.fetch)          # sync
        token = await cache.aget_or_fetch(request, acquirer.afetch)  # async

    ``clock`` supplies ``time()`` (compared with ``expires_on``/``refresh_on``) and ``monotonic()`` (the retry
    pause after a failed refresh). ``max_entries`` bounds L1 (the least recently used entries leave first,
    approximately). ``refresh_margin`` is how long before ``expires_on`` a token is due for a refresh (it is
    still served while the refresh runs or fails, never at or past ``expires_on``). ``l2`` is a shared store,
    e.g. :class:`~entra_mw._acquisition._redis.RedisStore`. ``refresh_retry`` is the pause, in seconds, between
    two attempts to refresh a token whose refresh failed. ``caller_skew`` is how long past the caller token's
    ``exp`` an On-Behalf-Of token may still be served (the validator's clock skew). ``wait_timeout`` bounds how
    long a caller waits for another caller's fetch of the same key (then it fetches on its own).
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_entries: int = 100_000,
        refresh_margin: float = 300.0,
        l2: L2Store | None = None,
        refresh_retry: float = 30.0,
        caller_skew: float = 300.0,
        wait_timeout: float = 120.0,
    ) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError("token_cache_size must be a positive integer", key="token_cache_size")
        if not isinstance(refresh_margin, int | float) or refresh_margin < 0:
            raise ConfigurationError("token_refresh_margin must be >= 0 seconds", key="token_refresh_margin")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max = max_entries
        self._margin = float(refresh_margin)
        self._retry = float(refresh_retry)
        self._caller_skew = float(caller_skew)
        self._wait_timeout = float(wait_timeout)
        self._l2 = l2
        self._lock = threading.Lock()  # guards L1, the flights and the counters; never held across I/O
        self._l1: OrderedDict[bytes, CachedToken] = OrderedDict()
        self._flights: dict[bytes, Flight[AccessToken]] = {}
        self._hits = self._misses = self._l2_hits = self._fetches = 0
        self._refreshes = self._stale_served = self._errors = 0

    @classmethod
    def from_config(cls, config: EntraConfig, clock: Clock) -> TokenCache:
        """The cache ``config`` describes: ``token_cache_size``, ``token_refresh_margin`` and, when
        ``redis_url`` is set, a Redis L2 (``redis_key_prefix``, ``cache_encryption_key``). Nothing connects
        yet.

        ::

            cache = TokenCache.from_config(EntraConfig.from_env(), SystemClock())
        """
        l2: L2Store | None = None
        if config.redis_url:
            from ._redis import RedisStore

            l2 = RedisStore(
                config.redis_url,
                prefix=config.redis_key_prefix,
                encryption_key=config.cache_encryption_key,
                clock=clock,
            )
        return cls(
            clock=clock,
            max_entries=config.token_cache_size,
            refresh_margin=config.token_refresh_margin,
            l2=l2,
            caller_skew=config.clock_skew,
            # A fetch takes at most its retries' requests and waits (the acquirer's budget); a little more.
            wait_timeout=(config.token_request_retries + 1) * 3 * config.http_timeout
            + config.token_request_max_wait
            + 5.0,
        )

    def __repr__(self) -> str:
        return f"TokenCache(entries={len(self._l1)}, max_entries={self._max}, l2={self._l2!r})"

    def __len__(self) -> int:
        """Entries held in L1 (expired ones leave when next looked up, or when evicted)."""
        return len(self._l1)

    @property
    def l2(self) -> L2Store | None:
        return self._l2

    @property
    def in_flight(self) -> int:
        """Fetches under way right now (a flight leaves as soon as it ends)."""
        return len(self._flights)

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                l2_hits=self._l2_hits,
                fetches=self._fetches,
                refreshes=self._refreshes,
                stale_served=self._stale_served,
                errors=self._errors,
            )

    def clear(self) -> None:
        """Forget every L1 entry (L2 is shared with other replicas and left alone)."""
        with self._lock:
            self._l1.clear()

    def close(self) -> None:
        if self._l2 is not None:
            self._l2.close()

    async def aclose(self) -> None:
        if self._l2 is not None:
            await self._l2.aclose()

    # -- the two drivers -------------------------------------------------------------------------------------

    def get_or_fetch(self, req: TokenRequest, fetch: Callable[[TokenRequest], AccessToken]) -> AccessToken:
        """The cached token for ``req``, else one from L2, else ``fetch(req)`` (once for concurrent callers).

        ``req.force_refresh`` skips both cache reads (the fetched token still replaces the cached one). Errors
        from ``fetch`` reach every caller waiting for that fetch and are not cached.

        ::

            token = cache.get_or_fetch(req, acquirer.fetch)
            headers = {"Authorization": token.authorization_header}
        """
        key = req.l1_key()
        if not req.force_refresh:
            hit = self.peek(key)
            if hit is not None:
                return hit.access
        l2 = self._l2
        wait = self._wait_timeout

        def do(step: _Step) -> Any:
            if step is _FETCH:
                return fetch(req)
            if isinstance(step, _Wait):
                return step.flight.wait(wait)
            if l2 is None:
                return None
            if step is _L2_GET:
                return l2.get(req.cache_key())
            if isinstance(step, _L2Set):
                l2.set(req.cache_key(), step.token, step.ttl)
            return None

        return run(self._flow(key, req, asynchronous=False), do)

    async def aget_or_fetch(
        self, req: TokenRequest, afetch: Callable[[TokenRequest], Awaitable[AccessToken]]
    ) -> AccessToken:
        """Async twin of :meth:`get_or_fetch`; a hit never leaves the event loop. asyncio or trio.

        ::

            token = await cache.aget_or_fetch(req, acquirer.afetch)
        """
        key = req.l1_key()
        if not req.force_refresh:
            hit = self.peek(key)
            if hit is not None:
                return hit.access
        l2 = self._l2
        wait = self._wait_timeout

        async def do(step: _Step) -> Any:
            if step is _FETCH:
                return await afetch(req)
            if isinstance(step, _Wait):
                return await step.flight.await_done(wait)
            if l2 is None:
                return None
            if step is _L2_GET:
                return await l2.aget(req.cache_key())
            if isinstance(step, _L2Set):
                await l2.aset(req.cache_key(), step.token, step.ttl)
            return None

        return await arun(self._flow(key, req, asynchronous=True), do)

    # -- the decisions ---------------------------------------------------------------------------------------

    def peek(self, key: bytes) -> CachedToken | None:
        """The L1 entry for ``key`` (a :meth:`TokenRequest.l1_key`) when its token can be served as it is, else
        ``None``: absent, expired, or due for a proactive refresh (those go through :meth:`get_or_fetch`).
        Counts a hit; never reads L2, never fetches, never waits.

        ::

            hit = cache.peek(req.l1_key())
            token = hit.access if hit is not None else cache.get_or_fetch(req, acquirer.fetch)
        """
        # The hot path: one clock read, one lookup, one comparison with the entry itself (its value is the end
        # of its serving window). No reordering, and ``used`` is only written when it changes. Anything
        # unusual goes to the flow.
        now = self._clock.time()
        with self._lock:
            entry = self._l1.get(key)
            if entry is None or now >= entry:
                return None
            if not entry.used:
                entry.used = True
            self._hits += 1
        return entry

    def _flow(self, key: bytes, req: TokenRequest, *, asynchronous: bool) -> Flow[_Step, AccessToken]:
        force = req.force_refresh
        # A forced fetch must not be answered by a flight that may have read L2, so it has flights of its own
        # (an L1 key is 32 or 64 bytes: one more byte cannot be another request's key).
        fkey = b"!" + key if force else key
        counted = False
        while True:
            now = self._clock.time()
            stale: CachedToken | None = None
            flight: Flight[AccessToken] | None = None
            join = False
            with self._lock:
                entry = None if force else self._l1.get(key)
                if entry is not None and now >= entry.usable_until:
                    del self._l1[key]  # expired: dropped lazily
                    entry = None
                if entry is not None:
                    if entry.refresh_at is None or now < entry.refresh_at:
                        entry.used = True
                        self._hits += 1  # filled while this caller was on its way here
                        return entry.access
                    # Due for a proactive refresh but still usable: one caller refreshes, the others keep it.
                    retry_at = entry.retry_at
                    if fkey in self._flights or (retry_at is not None and self._clock.monotonic() < retry_at):
                        self._stale_served += 1
                        return entry.access
                    stale = entry
                    self._refreshes += 1
                    flight = self._flights[fkey] = Flight(asynchronous=asynchronous)
                else:
                    if not counted:
                        self._misses += 1
                        counted = True
                    flight = self._flights.get(fkey)
                    if flight is None:
                        flight = self._flights[fkey] = Flight(asynchronous=asynchronous)
                    elif flight.would_deadlock(asynchronous=asynchronous):
                        # Waiting would deadlock: a sync caller on the loop thread of an async owner, or a
                        # fetch that asks for its own key. Fetch without the flight instead.
                        flight = None
                    else:
                        join = True
            if join:
                assert flight is not None
                ended: bool = yield _Wait(flight)
                if not ended:
                    # The owner is taking longer than any fetch should: fetch without it.
                    return (yield from self._own(key, fkey, req, None, None))
                if flight.abandoned:
                    continue  # its owner was cancelled: start over (one of the waiters becomes the owner)
                # The token, or the owner's error raised from its traceback (tracebacks do not pile up across a
                # thousand waiters).
                return flight.outcome()
            return (yield from self._own(key, fkey, req, flight, stale))

    def _own(
        self,
        key: bytes,
        fkey: bytes,
        req: TokenRequest,
        flight: Flight[AccessToken] | None,
        stale: CachedToken | None,
    ) -> Flow[_Step, AccessToken]:
        try:
            if self._l2 is not None and not req.force_refresh:
                shared: AccessToken | None = yield _L2_GET
                if shared is not None:
                    now = self._clock.time()
                    entry = self._entry(shared, now, req)
                    # A refresh only takes a token from L2 that is not itself due (another replica refreshed).
                    if entry is not None and (stale is None or entry.refresh_at is None or now < entry.refresh_at):
                        self._store(key, entry)
                        with self._lock:
                            self._l2_hits += 1
                        self._finish(fkey, flight, shared)
                        return shared
            with self._lock:
                self._fetches += 1
            try:
                token: AccessToken = yield _FETCH
            except Exception as exc:
                with self._lock:
                    self._errors += 1
                if stale is not None and isinstance(exc, _REFRESH_ERRORS):
                    return self._refresh_failed(req, stale, fkey, flight, exc)
                raise
            now = self._clock.time()
            # A token obtained with a claims challenge is not stored: nothing reads that key back (the claims
            # are part of it, and a claims request always bypasses the cache).
            entry = self._entry(token, now, req) if req.claims is None else None
            if entry is not None:
                self._store(key, entry)
            self._finish(fkey, flight, token)
            if entry is not None and self._l2 is not None:
                yield _L2Set(token, entry.usable_until - now)
            return token
        except BaseException as exc:
            self._finish(fkey, flight, None, exc)
            raise

    def _refresh_failed(
        self, req: TokenRequest, stale: CachedToken, fkey: bytes, flight: Flight[AccessToken] | None, exc: Exception
    ) -> AccessToken:
        stale.retry_at = self._clock.monotonic() + self._retry
        # Callers waiting on this flight came because they found no usable token: they get the error.
        self._finish(fkey, flight, None, exc)
        now = self._clock.time()
        if now >= stale.usable_until:
            raise exc
        if isinstance(exc, TokenAcquisitionError):
            reason = f"{exc.error or 'error'} {exc.aadsts or ''}".strip()
            correlation = exc.correlation_id
        else:
            reason, correlation = getattr(exc, "reason", type(exc).__name__), None
        logger.warning(
            "token refresh failed (flow=%s tid=%s reason=%s correlation_id=%s); serving the cached token, "
            "usable for %.0f s more",
            req.flow,
            req.tenant,
            reason,
            correlation,
            stale.usable_until - now,
        )
        with self._lock:
            self._stale_served += 1
        return stale.access

    # -- L1 --------------------------------------------------------------------------------------------------

    def _entry(self, token: AccessToken, now: float, req: TokenRequest) -> CachedToken | None:
        left = token.expires_on - now
        if left <= 0:
            return None
        # Served until the token expires (while a refresh is due, runs or fails), never after it; an OBO token no
        # longer than the caller's own token plus the skew the validator allows it.
        usable_until = token.expires_on
        if req.caller_expires_on is not None:
            usable_until = min(usable_until, req.caller_expires_on + self._caller_skew)
        if usable_until <= now:
            return None
        refresh_at = token.expires_on - min(self._margin, left / 2)
        if token.refresh_on is not None:
            refresh_at = min(refresh_at, token.refresh_on)
        return CachedToken(token, usable_until, refresh_at if refresh_at < usable_until else None, req.caller_oid)

    def _store(self, key: bytes, entry: CachedToken) -> None:
        # Eviction is "second chance" (CLOCK), an LRU approximation: a hit only sets ``used`` (no reordering,
        # so the hit path stays flat however large L1 grows); the oldest entry is evicted unless it was used,
        # in which case it moves to the new end with its flag cleared. At most _SECOND_CHANCES are spared per
        # eviction, so an insert is O(1) even when every entry has been used.
        l1 = self._l1
        with self._lock:
            l1[key] = entry
            l1.move_to_end(key)
            spared = 0
            while len(l1) > self._max:
                old_key, old = l1.popitem(last=False)
                if old.used and spared < _SECOND_CHANCES:
                    old.used = False
                    l1[old_key] = old
                    spared += 1

    def _finish(
        self,
        fkey: bytes,
        flight: Flight[AccessToken] | None,
        token: AccessToken | None,
        error: BaseException | None = None,
    ) -> None:
        if flight is None or flight.done:
            return
        with self._lock:
            if self._flights.get(fkey) is flight:
                del self._flights[fkey]
        # An Exception reaches the waiters; a cancellation or an interruption abandons the flight (they start over).
        flight.finish(token, error=error)
