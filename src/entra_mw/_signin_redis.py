"""A web sign-in :class:`~entra_mw._signin.SessionStore` over Redis, shared by every replica of a web app.

Sessions hold the user's refresh token, so values are sealed with AES-256-GCM when an encryption key is given
(the engine's ``cache_encryption_key``: a key derived from it by HKDF, each value bound to its Redis key, so a
value cannot be moved to another key or another user). Keys are digests of the browser's ids (see ``_signin``).

Redis unavailable: reading a session answers "no session" (the user is asked to sign in) and a warning is logged
once per outage; storing one (the end of a sign-in) is a 503 :class:`~entra_mw.SignInError`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Final

from ._signin import SignInError
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._config import EntraConfig

__all__ = ["RedisSessionStore"]

logger = logging.getLogger("entra_mw.signin")

_MAX_VALUE_BYTES: Final = 1024 * 1024


class RedisSessionStore:
    """Sign-in sessions in Redis (redis-py, ``entra-mw[redis]``), for a web app with several replicas.

    ::

        store = RedisSessionStore.from_config(auth.config)        # redis_url, redis_key_prefix, cache_encryption_key
        signin = WebSignIn(auth, scopes=[...], store=store)

    ``url`` is any redis-py URL (``redis://``, ``rediss://``, ``unix://``). ``encryption_key``: a secret string
    (32 random bytes, base64-encoded); without it values are plain JSON and anyone who can read Redis can read
    the users' refresh tokens (a warning is logged).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "entra_mw:signin:",
        encryption_key: str | None = None,
        socket_timeout: float = 0.5,
    ) -> None:
        from ._acquisition._redis import Sealer, redis_location

        self._url = url
        self._where = redis_location(url, what="RedisSessionStore")
        self._prefix = prefix
        self._sealer = Sealer(encryption_key)
        self._timeout = socket_timeout
        self._lock = threading.Lock()
        self._client: Any = None
        self._outage = False
        if not self._sealer.encrypted:
            logger.warning("sign-in sessions in Redis at %s are not encrypted: set cache_encryption_key", self._where)

    @classmethod
    def from_config(cls, config: EntraConfig) -> RedisSessionStore:
        """The store for an engine's configuration: its ``redis_url``, ``redis_key_prefix`` (+ ``signin:``)
        and ``cache_encryption_key``."""
        if not config.redis_url:
            raise ConfigurationError("RedisSessionStore.from_config needs redis_url", key="redis_url")
        return cls(
            config.redis_url,
            prefix=f"{config.redis_key_prefix}signin:",
            encryption_key=config.cache_encryption_key,
        )

    def __repr__(self) -> str:
        return f"RedisSessionStore({self._where!r}, prefix={self._prefix!r}, encrypted={self.encrypted})"

    @property
    def encrypted(self) -> bool:
        return self._sealer.encrypted

    # -- SessionStore ----------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        rkey = self._prefix + key
        try:
            raw = self._redis().get(rkey)
        except _redis_errors() as exc:
            self._failed(exc)
            return None
        self._ok()
        return self._open(rkey, raw)

    def take(self, key: str) -> bytes | None:
        rkey = self._prefix + key
        try:
            raw = self._redis().getdel(rkey)  # atomic: a pending sign-in is used once, across replicas too
        except _redis_errors() as exc:
            self._failed(exc)
            return None
        self._ok()
        return self._open(rkey, raw)

    def set(self, key: str, value: bytes, ttl: float) -> None:
        rkey = self._prefix + key
        try:
            self._redis().set(rkey, self._seal(rkey, value), px=max(1, int(ttl * 1000)))
        except _redis_errors() as exc:
            self._failed(exc)
            raise SignInError(
                "Sign-in is unavailable for a moment; try again shortly.", reason="store_unavailable", status_code=503
            ) from None
        self._ok()

    def delete(self, key: str) -> None:
        try:
            self._redis().delete(self._prefix + key)
        except _redis_errors() as exc:
            self._failed(exc)
            return
        self._ok()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- internals -------------------------------------------------------------------------------------------

    def _redis(self) -> Any:
        client = self._client
        if client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            with self._lock:
                if self._client is None:
                    self._client = redis.Redis.from_url(
                        self._url,
                        retry=Retry(NoBackoff(), 0),
                        socket_timeout=self._timeout,
                        socket_connect_timeout=self._timeout,
                    )
                client = self._client
        return client

    def _seal(self, rkey: str, value: bytes) -> bytes:
        return self._sealer.seal(rkey, value)

    def _open(self, rkey: str, raw: object) -> bytes | None:
        return self._sealer.open(rkey, raw, limit=_MAX_VALUE_BYTES)

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            first, self._outage = not self._outage, True
        if first:
            logger.warning("sign-in sessions: Redis at %s unavailable (%s)", self._where, type(exc).__name__)

    def _ok(self) -> None:
        if self._outage:
            with self._lock:
                self._outage = False
            logger.info("sign-in sessions: Redis at %s available again", self._where)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError)
