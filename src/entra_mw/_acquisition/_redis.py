"""The optional L2 token cache: Redis, shared by the replicas of an app (DESIGN §3 "Redis", §5 "Acquisition").

Keys are ``{prefix}at:{sha256(cache_key)}``: the canonical key never reaches Redis in clear (it names a user).
Values are the JSON of an :class:`AccessToken`; with an encryption key they are AES-256-GCM sealed, the key
derived from the configured secret with HKDF/SHA-256 and the Redis key bound in as associated data, so a value
copied under another key does not open. A value that does not parse or open is a miss, and is deleted.

Without an encryption key, values are plain JSON: a warning says so once, when the store is built. Whatever
is read back is checked as if a stranger had written it (anyone who can write to Redis can): only a ``Bearer``
token with header-safe text is accepted, and its life is capped at 24 h from the moment it is read, so a
planted entry cannot be served for ever.

Redis is an optimisation, never a dependency: any Redis failure (refused, timed out, a server error) is a miss
or a skipped write. The first failure logs one warning, then Redis is left alone for ``retry_interval``
seconds so an outage costs at most one short timeout per interval, not one per request; recovery is logged
once.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import math
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from .._clock import Clock, SystemClock
from ..errors import ConfigurationError
from ._types import AccessToken

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["RedisStore", "Sealer", "redis_location"]

logger = logging.getLogger("entra_mw.acquisition.redis")

_SEALED: Final = b"\x01"  # version byte of an AES-GCM sealed value: 0x01 || nonce(12) || ciphertext+tag
_NONCE_BYTES: Final = 12  # 96-bit nonce, the size GCM is specified for (NIST SP 800-38D §5.2.1.1)
_HKDF_SALT: Final = b"entra_mw token cache"
_HKDF_INFO: Final = b"entra_mw L2 AES-256-GCM v1"
_MAX_VALUE_BYTES: Final = 64 * 1024  # a token entry is a few KiB; anything bigger is not ours
#: No entry is believed to live longer than this from the moment it is read (Entra issues 60-90 minutes).
MAX_ENTRY_LIFETIME: Final = 24 * 3600.0
#: The token types the engine writes (it refuses any other from Entra).
_TOKEN_TYPES: Final = frozenset({"Bearer"})


class RedisStore:
    """L2 token store over redis-py, with a sync and an asyncio client, each built on first use.

    ::

        store = RedisStore("redis://cache:6379/0", prefix="myapp:", encryption_key=os.environ["KEY"])
        cache = TokenCache(l2=store)

    ``url`` is any redis-py URL (``redis://``, ``rediss://``, ``unix://``). ``encryption_key`` is a secret
    string (use 32 random bytes, base64-encoded); without it values are stored as plain JSON, so anyone who
    can read Redis can read the tokens. ``socket_timeout`` bounds each connect and each command.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "entra_mw:",
        encryption_key: str | None = None,
        clock: Clock | None = None,
        socket_timeout: float = 0.5,
        retry_interval: float = 5.0,
    ) -> None:
        self._url = url
        self._where = redis_location(url, what="redis_url")
        self._prefix = prefix
        self._sealer = Sealer(encryption_key)
        if not self._sealer.encrypted:
            logger.warning(
                "token cache: Redis at %s without cache_encryption_key: tokens are stored in plaintext, readable "
                "by anyone who can read Redis; set cache_encryption_key",
                self._where,
            )
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._timeout = socket_timeout
        self._retry_interval = retry_interval
        self._lock = threading.Lock()
        self._client: Any = None
        # An asyncio client's connections belong to the loop that opened them: one client per running loop.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._down_until: float | None = None  # monotonic time before which Redis is not tried again
        self._outage = False  # a warning has been logged for the current outage

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self._prefix!r}, encrypted={self.encrypted})"

    @property
    def encrypted(self) -> bool:
        return self._sealer.encrypted

    def redis_key(self, cache_key: str) -> str:
        """The Redis key holding the entry for ``cache_key`` (a canonical :meth:`TokenRequest.cache_key`)."""
        return f"{self._prefix}at:{hashlib.sha256(cache_key.encode()).hexdigest()}"

    # -- sync ------------------------------------------------------------------------------------------------

    def get(self, key: str) -> AccessToken | None:
        """The entry for ``key``, or ``None`` on a miss, an undecodable value or any Redis failure."""
        if not self._available():
            return None
        rkey = self.redis_key(key)
        try:
            raw = self._sync_client().get(rkey)
        except _redis_errors() as exc:
            self._failed(exc)
            return None
        self._ok()
        if raw is None:
            return None
        token = self._decode(rkey, raw)
        if token is None:
            self._delete(rkey)
        return token

    def set(self, key: str, token: AccessToken, ttl: float) -> None:
        """Store ``token`` under ``key`` for ``ttl`` seconds (at least 1); a failure is skipped."""
        if not self._available():
            return
        rkey = self.redis_key(key)
        try:
            self._sync_client().set(rkey, self._encode(rkey, token), ex=_ttl(ttl))
        except _redis_errors() as exc:
            self._failed(exc)
            return
        self._ok()

    def _delete(self, rkey: str) -> None:
        try:
            self._sync_client().delete(rkey)
        except _redis_errors() as exc:
            self._failed(exc)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- async -----------------------------------------------------------------------------------------------

    async def aget(self, key: str) -> AccessToken | None:
        """Async twin of :meth:`get` (redis-py's asyncio client; a worker thread outside asyncio)."""
        if not self._available():
            return None
        if not _in_asyncio():
            import anyio.to_thread

            return await anyio.to_thread.run_sync(self.get, key)
        rkey = self.redis_key(key)
        try:
            raw = await self._async_client().get(rkey)
        except _redis_errors() as exc:
            self._failed(exc)
            return None
        self._ok()
        if raw is None:
            return None
        token = self._decode(rkey, raw)
        if token is None:
            try:
                await self._async_client().delete(rkey)
            except _redis_errors() as exc:
                self._failed(exc)
        return token

    async def aset(self, key: str, token: AccessToken, ttl: float) -> None:
        """Async twin of :meth:`set`."""
        if not self._available():
            return
        if not _in_asyncio():
            import anyio.to_thread

            await anyio.to_thread.run_sync(self.set, key, token, ttl)
            return
        rkey = self.redis_key(key)
        try:
            await self._async_client().set(rkey, self._encode(rkey, token), ex=_ttl(ttl))
        except _redis_errors() as exc:
            self._failed(exc)
            return
        self._ok()

    async def aclose(self) -> None:
        """Close the sync client and this loop's asyncio client. Clients other loops opened can only be
        closed on their own loop; they are dropped."""
        loop = asyncio.get_running_loop() if _in_asyncio() else None
        with self._lock:
            aclient = self._aclients.pop(loop, None) if loop is not None else None
        if aclient is not None:
            await aclient.aclose()
        self.close()

    # -- clients ---------------------------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        # No client-side retries: a retry would multiply the stall of an outage, and a miss is cheap.
        return {"socket_timeout": self._timeout, "socket_connect_timeout": self._timeout}

    def _sync_client(self) -> Any:
        client = self._client
        if client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            with self._lock:
                if self._client is None:
                    self._client = redis.Redis.from_url(self._url, retry=Retry(NoBackoff(), 0), **self._options())
                client = self._client
        return client

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        aclient = self._aclients.get(loop)
        if aclient is None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            with self._lock:
                aclient = self._aclients.get(loop)
                if aclient is None:
                    aclient = redis.asyncio.Redis.from_url(self._url, retry=Retry(NoBackoff(), 0), **self._options())
                    self._aclients[loop] = aclient
        return aclient

    # -- outage handling -------------------------------------------------------------------------------------

    def _available(self) -> bool:
        down_until = self._down_until
        return down_until is None or self._clock.monotonic() >= down_until

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._down_until = self._clock.monotonic() + self._retry_interval
            first = not self._outage
            self._outage = True
        if first:
            logger.warning(
                "token cache: Redis at %s unavailable (%s); serving from the in-process cache and the "
                "network, retrying every %.0f s",
                self._where,
                type(exc).__name__,
                self._retry_interval,
            )

    def _ok(self) -> None:
        if self._outage or self._down_until is not None:
            with self._lock:
                recovered = self._outage
                self._outage = False
                self._down_until = None
            if recovered:
                logger.info("token cache: Redis at %s available again", self._where)

    # -- values ----------------------------------------------------------------------------------------------

    def _encode(self, rkey: str, token: AccessToken) -> bytes:
        body = json.dumps(
            {
                "token": token.token,
                "expires_on": token.expires_on,
                "refresh_on": token.refresh_on,
                "token_type": token.token_type,
                "scopes": list(token.scopes),
                "tenant": token.tenant,
            },
            separators=(",", ":"),
        ).encode()
        return self._sealer.seal(rkey, body)

    def _decode(self, rkey: str, raw: Any) -> AccessToken | None:
        raw = self._sealer.open(rkey, raw, limit=_MAX_VALUE_BYTES)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        return _token_from(data, self._clock.time())


def _token_from(data: object, now: float) -> AccessToken | None:
    if not isinstance(data, dict):
        return None
    token, expires_on, refresh_on = data.get("token"), data.get("expires_on"), data.get("refresh_on")
    token_type, scopes, tenant = data.get("token_type"), data.get("scopes"), data.get("tenant")
    if not isinstance(token, str) or not token or not _header_safe(token) or token_type not in _TOKEN_TYPES:
        return None
    if not isinstance(expires_on, int | float) or not _is_time(expires_on):
        return None
    if refresh_on is not None and not (isinstance(refresh_on, int | float) and _is_time(refresh_on)):
        return None
    # Whoever wrote it, an entry is served at most MAX_ENTRY_LIFETIME from now.
    expires_on = min(float(expires_on), now + MAX_ENTRY_LIFETIME)
    if refresh_on is not None:
        refresh_on = min(float(refresh_on), expires_on)
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        return None
    if tenant is not None and not isinstance(tenant, str):
        return None
    return AccessToken(
        token=token,
        expires_on=float(expires_on),
        refresh_on=None if refresh_on is None else float(refresh_on),
        token_type=token_type,
        scopes=tuple(scopes),
        tenant=tenant,
    )


def _header_safe(token: str) -> bool:
    # It goes into an Authorization header: printable ASCII, no spaces (RFC 6750 b64token is narrower still).
    return token.isascii() and token.isprintable() and " " not in token


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ttl(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def redis_location(url: str, *, what: str) -> str:
    """``host:port`` (or ``unix``) of a Redis URL, to log instead of the URL, which may carry a password; a
    ``ConfigurationError`` when redis-py is missing or the URL is not ``redis://``, ``rediss://`` or ``unix://``."""
    if importlib.util.find_spec("redis") is None:
        raise ConfigurationError(f"{what} needs redis-py: install entra-mw[redis]", key="redis_url")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError("redis_url must be a redis://, rediss:// or unix:// URL", key="redis_url")
    return f"{parts.hostname or parts.path}:{parts.port or 6379}" if parts.scheme != "unix" else "unix"


class Sealer:
    """Values sealed with AES-256-GCM under a key derived from the configured secret and bound to the Redis key
    they are stored under (the associated data), so a value copied to another key does not open; without a
    secret, values pass through. Shared by the token cache's and the sign-in sessions' Redis stores.

    ::

        sealer = Sealer(os.environ["ENTRA_MW_CACHE_ENCRYPTION_KEY"])
        stored = sealer.seal("entra_mw:at:…", body)
        assert sealer.open("entra_mw:at:…", stored, limit=64 * 1024) == body
    """

    __slots__ = ("_aead",)

    def __init__(self, secret: str | None) -> None:
        self._aead: AESGCM | None = _aead(secret) if secret else None

    @property
    def encrypted(self) -> bool:
        return self._aead is not None

    def seal(self, rkey: str, value: bytes) -> bytes:
        if self._aead is None:
            return value
        nonce = os.urandom(_NONCE_BYTES)
        return _SEALED + nonce + self._aead.encrypt(nonce, value, rkey.encode())

    def open(self, rkey: str, raw: object, *, limit: int) -> bytes | None:
        """The value stored at ``rkey``, or ``None`` when it is not bytes, is over ``limit`` or does not open."""
        if not isinstance(raw, bytes) or len(raw) > limit:
            return None
        if self._aead is None:
            return raw
        from cryptography.exceptions import InvalidTag

        # With a key, only sealed values are accepted: a plain value could have been planted.
        if not raw.startswith(_SEALED) or len(raw) < 1 + _NONCE_BYTES + 16:
            return None
        try:
            return self._aead.decrypt(raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :], rkey.encode())
        except InvalidTag:
            return None


def _aead(secret: str) -> AESGCM:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    # HKDF (RFC 5869) turns the configured string, whatever its form, into a uniform 256-bit key.
    material = secret.encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(material)
    return AESGCM(key)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    # OSError covers socket errors and the builtin TimeoutError that redis-py may let through.
    return (RedisError, OSError)


def _in_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
