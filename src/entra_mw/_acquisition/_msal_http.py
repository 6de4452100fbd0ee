"""MSAL's ``http_client``, carried by the engine's pooled httpx2 client (DESIGN §3).

MSAL Python talks HTTP through any object with ``get``/``post`` returning ``status_code``/``text``/``headers``
(``msal/oauth2cli/http.py``). This adapter gives it the engine's :class:`~entra_mw._http.HttpSeam` client,
so tests inject FakeEntra's transport and nothing patches the network. Three more duties:

* **Transport errors become** ``requests`` **errors.** MSAL only recognises ``requests.RequestException`` as
  "the network failed" (``application.py`` ``_acquire_token_silent_from_cache_and_possibly_refresh_it``: it
  then serves a still-valid cached token instead of failing). :class:`TransportFailure` subclasses
  ``requests.ConnectionError`` so that fallback works; the engine turns whatever escapes into
  ``TokenAcquisitionError`` (503).
* **The last exchange is remembered per thread** (status, ``Retry-After`` and, for errors only, the body).
  MSAL drops the HTTP status of 4xx answers and raises a bare error on 5xx; the engine needs both to map errors
  (spec §5.2) and to honour ``Retry-After``. Success bodies hold tokens and are never kept.
* **Discovery answers are cached** (``/.well-known/openid-configuration``, 2xx only, bounded, 24 h as MSAL's
  own HTTP cache does, on the engine's clock), so building a client per tenant or per agent costs no extra
  round trip.
* **Every answer is read within an overall deadline** (the seam's timeout for the whole exchange, not per
  read): an identity provider, or anything posing as one, that drips its answer is cut off, and the token
  request fails as "unreachable" (503).
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Final
from urllib.parse import urlsplit

import httpx2
import msal
import requests

from .._clock import Clock, SystemClock
from .._http import Deadline, HttpSeam, read_capped
from .._ids import is_loopback_host
from .._jwks import pinned_url_problem
from ..errors import ConfigurationError

__all__ = [
    "AppTokenCache",
    "Exchange",
    "HttpStatusFailure",
    "MsalHttpClient",
    "MsalResponse",
    "NoThrottleHttpCache",
    "TransportFailure",
    "parse_retry_after",
]

logger = logging.getLogger("entra_mw.acquisition.http")

#: Token and discovery answers are small; anything larger is refused rather than buffered.
MAX_RESPONSE_BYTES: Final = 1024 * 1024
_MAX_ERROR_BODY: Final = 16 * 1024
_DISCOVERY_TTL: Final = 24 * 3600.0
_DISCOVERY_ENTRIES: Final = 256
_DISCOVERY_SUFFIX: Final = "/.well-known/openid-configuration"


class TransportFailure(requests.ConnectionError):
    """The identity provider could not be reached (connect, TLS, timeout, protocol error, oversized answer).

    A ``requests`` error on purpose: MSAL falls back to a still-valid cached token only for those.
    """


class EndpointRefused(requests.RequestException):
    """An address MSAL was about to use (read from Entra's discovery document) is off the configured instance:
    nothing is sent there. The identity provider's answer is unusable (a 502), not unreachable."""


class HttpStatusFailure(requests.HTTPError):
    """``raise_for_status`` on an error answer (MSAL calls it for HTTP >= 500)."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date, compared with ``now``,
    epoch seconds); ``None`` when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # An HTTP-date is the server's wall time: compared with real wall time unless the caller gives ``now``.
    delay = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, min(delay, 86_400.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """What the engine needs to know about the last answer on this thread. Never holds a token."""

    status: int
    retry_after: float | None = None
    #: The JSON body of an error answer (status >= 400), parsed; ``None`` for success or non-JSON bodies.
    error_body: Mapping[str, Any] | None = field(default=None, repr=False)


class MsalResponse:
    """The response shape MSAL expects (``msal/oauth2cli/http.py`` ``Response``)."""

    __slots__ = ("headers", "status_code", "text")

    def __init__(self, status_code: int, text: str, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.text = text
        self.headers = headers

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HttpStatusFailure(f"HTTP {self.status_code}")

    def __repr__(self) -> str:
        return f"MsalResponse(status_code={self.status_code})"


def _text(value: Any) -> str:
    # MSAL hands JWT client assertions over as bytes; str(bytes) would send "b'...'".
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    return str(value)


def _is_local_host(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_link_local


class MsalHttpClient:
    """An MSAL ``http_client`` over :attr:`HttpSeam.client`.

    ::

        http_client = MsalHttpClient(seam)
        app = msal.ConfidentialClientApplication(client_id, ..., http_client=http_client)

    ``instance`` pins every address MSAL asks for (the authority's discovery document and the token endpoint
    it names) to the configured instance, or another login host of its cloud
    (:func:`entra_mw._jwks.pinned_url_problem`); plain ``http://`` then only with ``allow_insecure_http`` (a
    loopback instance). Whether or not a transport is injected changes nothing. A refused address raises
    :class:`EndpointRefused`. ``allow_local_http`` (the managed-identity client, which has no ``instance``)
    permits plain ``http://`` to loopback and link-local hosts: the managed-identity endpoints (IMDS
    ``169.254.169.254``, App Service and Arc on ``localhost``) speak plain HTTP by design; anything else must
    be ``https://``.
    """

    def __init__(
        self,
        seam: HttpSeam,
        *,
        allow_local_http: bool = False,
        cache_discovery: bool = True,
        clock: Clock | None = None,
        instance: str | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        self._seam = seam
        self._instance = instance
        self._allow_insecure_http = allow_insecure_http
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._allow_local_http = allow_local_http
        self._cache_discovery = cache_discovery
        self._local = threading.local()
        self._discovery: OrderedDict[str, tuple[float, MsalResponse]] = OrderedDict()
        self._discovery_lock = threading.Lock()

    # -- what the engine reads ----------------------------------------------------------------------

    def reset_exchange(self) -> None:
        self._local.last = None

    def last_exchange(self) -> Exchange | None:
        last: Exchange | None = getattr(self._local, "last", None)
        return last

    # -- MSAL's interface ---------------------------------------------------------------------------

    def get(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> MsalResponse:
        cacheable = self._cache_discovery and not params and urlsplit(url).path.endswith(_DISCOVERY_SUFFIX)
        if cacheable:
            hit = self._discovery_hit(url)
            if hit is not None:
                return hit
        response = self._send("GET", url, params=params, headers=headers, timeout=kwargs.get("timeout"))
        if cacheable and 200 <= response.status_code < 300:
            self._discovery_store(url, response)
        return response

    def post(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> MsalResponse:
        return self._send("POST", url, params=params, data=data, headers=headers, timeout=kwargs.get("timeout"))

    def close(self) -> None:
        """The pooled client belongs to the engine's seam; only the discovery cache is dropped here."""
        with self._discovery_lock:
            self._discovery.clear()

    # -- internals ----------------------------------------------------------------------------------

    def _check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            parts, host = None, None
        scheme = parts.scheme if parts is not None else ""
        if self._instance is not None:
            problem = pinned_url_problem(url, self._instance)
            if (
                problem is None
                and scheme == "http"
                and not (self._allow_insecure_http and is_loopback_host(host or ""))
            ):
                problem = "plain http needs a loopback instance with allow_insecure_http=True"
            if problem is None:
                return
            logger.warning("identity endpoint refused: %s://%s (%s)", scheme, host or "", problem)
            raise EndpointRefused(f"refused identity endpoint {scheme}://{host or ''}: {problem}")
        if scheme == "https" and host:
            return
        if scheme == "http" and host and self._allow_local_http and _is_local_host(host):
            return
        raise ConfigurationError(
            f"identity endpoints must be https:// URLs, got {scheme}://{host or ''}",
            key="instance",
        )

    def _discovery_hit(self, url: str) -> MsalResponse | None:
        now = self._clock.monotonic()
        with self._discovery_lock:
            entry = self._discovery.get(url)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._discovery[url]
                return None
            self._discovery.move_to_end(url)
            return entry[1]

    def _discovery_store(self, url: str, response: MsalResponse) -> None:
        with self._discovery_lock:
            self._discovery[url] = (self._clock.monotonic() + _DISCOVERY_TTL, response)
            self._discovery.move_to_end(url)
            while len(self._discovery) > _DISCOVERY_ENTRIES:
                self._discovery.popitem(last=False)

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        data: Mapping[str, Any] | str | bytes | None = None,
        timeout: Any = None,
    ) -> MsalResponse:
        self._check_url(url)
        request_kwargs: dict[str, Any] = {}
        if params:
            request_kwargs["params"] = {k: _text(v) for k, v in params.items() if v is not None}
        if headers:
            request_kwargs["headers"] = {k: _text(v) for k, v in headers.items() if v is not None}
        if isinstance(data, str | bytes):
            request_kwargs["content"] = data
            if headers is None or not any(k.lower() == "content-type" for k in headers):
                request_kwargs.setdefault("headers", {})["Content-Type"] = "application/x-www-form-urlencoded"
        elif data is not None:
            request_kwargs["data"] = {k: _text(v) for k, v in data.items() if v is not None}
        budget = self._seam.deadline
        if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
            request_kwargs["timeout"] = float(timeout)
            budget = min(budget, float(timeout))
        host = urlsplit(url).hostname
        deadline = Deadline(budget)

        def too_large() -> Exception:
            return TransportFailure(f"{method} {host}: answer larger than {MAX_RESPONSE_BYTES} bytes")

        try:
            with self._seam.client.stream(method, url, **request_kwargs) as response:
                body = read_capped(response, limit=MAX_RESPONSE_BYTES, deadline=deadline, too_large=too_large)
                status = response.status_code
                out_headers = {k.lower(): v for k, v in response.headers.items()}
                encoding = response.charset_encoding or "utf-8"
        except httpx2.TimeoutException as exc:
            self._local.last = None
            logger.warning("token endpoint timeout: %s %s (%s)", method, host, type(exc).__name__)
            raise TransportFailure(f"{method} {host}: timed out") from exc
        except httpx2.TransportError as exc:
            self._local.last = None
            logger.warning("identity provider unreachable: %s %s (%s)", method, host, type(exc).__name__)
            raise TransportFailure(f"{method} {host}: {type(exc).__name__}") from exc
        try:
            text = bytes(body).decode(encoding, errors="replace")
        except LookupError:
            text = bytes(body).decode("utf-8", errors="replace")
        self._local.last = self._exchange(status, out_headers, text, self._clock.time())
        logger.debug("%s %s -> %d", method, host, status)
        return MsalResponse(status, text, out_headers)

    @staticmethod
    def _exchange(status: int, headers: dict[str, str], text: str, now: float) -> Exchange:
        error_body: Mapping[str, Any] | None = None
        if status >= 400 and len(text) <= _MAX_ERROR_BODY:
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):  # RecursionError: nested too deeply
                parsed = None
            if isinstance(parsed, dict):
                error_body = parsed
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        return Exchange(status=status, retry_after=retry_after, error_body=error_body)


class NoThrottleHttpCache(dict[str, Any]):
    """An ``http_cache`` for MSAL applications that keeps discovery GETs and drops every cached POST answer.

    MSAL's ``ThrottledHttpClient`` replays an identical POST's HTTP 400 for 60 s and a 429/5xx for its
    ``Retry-After`` (default 5 s) from this mapping (``msal/throttled_http_client.py``). The engine retries
    429/5xx itself, honouring ``Retry-After``, and its own cache and single-flight keep identical requests
    from repeating; a replayed 429 would turn each of its retries into a failure, and a replayed 400 would
    hide a consent granted a moment ago. Dropping the POST entries here (a documented MSAL parameter) turns
    that layer off.
    """

    def __setitem__(self, key: str, value: Any) -> None:
        # "POST ..." keys: confidential-client token requests; "REQ ...": managed-identity token requests.
        if isinstance(key, str) and key.startswith(("POST ", "REQ ")):
            return
        super().__setitem__(key, value)


#: Grants whose results MSAL stores but never reads back (spec §3.8): our own cache holds those tokens.
_APP_GRANTS: Final = frozenset({None, "client_credentials"})


class AppTokenCache(msal.TokenCache):  # type: ignore[misc]
    """MSAL's token cache for one application object, kept small and on the engine's clock.

    * **Only app tokens are stored** (client credentials: the app's own tokens, T1 per agent, T2,
      managed-identity tokens). OBO and ``user_fic`` results are dropped on arrival: MSAL never looks them
      up (spec §3.8), our own cache keeps them, and storing them would grow this cache by one user per
      request (DESIGN §3).
    * **Bounded**: past ``max_access_tokens`` entries, expired ones go first, then the oldest.
    * **On the engine's clock**: entries are stamped with ``clock.time()`` and translated to wall time when
      MSAL reads them (MSAL compares with :func:`time.time`), so a test's fake clock expires them as it
      expires ours.
    """

    def __init__(self, clock: Clock, *, max_access_tokens: int = 10_000) -> None:
        super().__init__()
        self._clock = clock
        self._max_access_tokens = max_access_tokens

    def add(self, event: dict[str, Any], now: float | None = None) -> None:
        if event.get("grant_type") not in _APP_GRANTS:
            return
        super().add(event, now=self._clock.time() if now is None else now)
        self._prune()

    def search(
        self,
        credential_type: str,
        target: Any = None,
        query: Any = None,
        *,
        now: float | None = None,
    ) -> Any:
        clock_now = self._clock.time()
        inner = super().search(credential_type, target=target, query=query, now=clock_now if now is None else now)
        if credential_type != self.CredentialType.ACCESS_TOKEN:
            yield from inner
            return
        shift = time.time() - clock_now  # MSAL compares expiry with time.time(): translate to it
        for entry in inner:
            out = dict(entry)
            for name in ("expires_on", "refresh_on", "extended_expires_on"):
                if name in out:
                    out[name] = str(int(float(out[name]) + shift))
            yield out

    def access_token_count(self) -> int:
        with self._lock:
            return len(self._cache.get(self.CredentialType.ACCESS_TOKEN, {}))

    def _prune(self) -> None:
        with self._lock:
            entries = self._cache.get(self.CredentialType.ACCESS_TOKEN, {})
            if len(entries) <= self._max_access_tokens:
                return
            now = self._clock.time()
            ordered = sorted(
                entries.values(),
                key=lambda e: (float(e.get("expires_on", 0)) > now, float(e.get("cached_at", 0))),
            )
            excess = len(entries) - self._max_access_tokens
            for entry in ordered[: max(excess, len(entries) // 10)]:
                self.remove_at(entry)
