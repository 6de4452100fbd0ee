"""The signing-key store: metadata and JWKS for the configured authority, shared by sync and async callers.

What it guarantees (DESIGN §5, spec §4.1 and §4.5):

* keys come only from the configured v2 metadata's ``jwks_uri`` (``ExtraQueryParameters`` such as
  ``?appid=`` select app-specific keys); every address the metadata supplies (``jwks_uri``,
  ``token_endpoint``) must be on the configured instance's scheme, host and port, or on another login host of
  the same cloud (its instance-discovery aliases), and carry no userinfo; otherwise the refresh fails closed;
* https only; plain http only with ``EntraConfig.allow_insecure_http`` (which only a loopback instance may
  set); no redirects; documents capped at 1 MiB; a missing CA file or a certificate that fails verification is
  logged as such;
* RSA keys only, with a 2048-8192 bit modulus and public exponent 65537; a key's ``alg`` is kept, and a token
  signed with another algorithm is refused (RFC 8725 §3.1);
* automatic refresh every ``jwks_refresh_interval`` (12 h); an unknown ``kid`` triggers a refresh at most
  once per ``jwks_refresh_cooldown`` (5 min; the first is immediate, as Wilson's ``RequestRefresh``), and a
  bounded LRU negative cache answers repeated unknown kids without taking a lock;
* single flight (:mod:`entra_mw._singleflight`): however many threads and tasks need a refresh at once, one
  fetch runs and the others wait for it, without polling, so sync and async callers may coexist on either
  anyio backend;
* last-known-good: a failed refresh (network error, non-200, bad JSON, no usable key) never replaces good
  keys; with no keys at all callers get :class:`~entra_mw.errors.ProviderUnavailable` (503), and the next
  attempt waits ``_FAILURE_BACKOFF`` seconds.

The fetch is written once, as a flow (:mod:`entra_mw._flow`) that yields URLs and receives bodies; the
flow runner drives it with the seam's clients, each document read by the seam's capped reader within the
seam's deadline, sync and async alike.

Issuers: the v2 issuer comes from the v2 metadata. The v1 issuer (``https://sts.windows.net/{tenantid}/``
on the public cloud) comes from the v1 metadata, fetched once with the first successful refresh; when that
document cannot be had, it is derived as spec §4.2 describes (the public-cloud form).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import anyio
import httpx2
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from ._config import EntraConfig
from ._flow import Flow, arun, run
from ._http import Deadline, DeadlineExceeded, TrustStoreError, aread_capped, read_capped, tls_verification_failed
from ._ids import GUID, META_TENANTS, SUPPORTED_ALGORITHMS
from ._singleflight import Flight
from .errors import ConfigurationError, InvalidToken, ProviderUnavailable

if TYPE_CHECKING:
    from ._clock import Clock
    from ._http import HttpSeam

__all__ = [
    "CLOUD_ALIASES",
    "MAX_DOCUMENT_BYTES",
    "KeySet",
    "KeyStore",
    "SigningKey",
    "parse_jwks",
    "parse_metadata",
    "pinned_url_problem",
]

logger = logging.getLogger("entra_mw.jwks")

MAX_DOCUMENT_BYTES: Final = 1024 * 1024
_MAX_KEYS: Final = 100
_MAX_URL: Final = 2048
_MIN_MODULUS_BITS: Final = 2048
_MAX_MODULUS_BITS: Final = 8192
# The exponent every real RSA signing key uses (F4). Others are either tiny (e=3: the Bleichenbacher-style
# signature forgeries against lax PKCS#1 v1.5 verifiers) or odd choices that only an attacker's JWKS would hold.
_RSA_EXPONENT: Final = 65537
_FAILURE_BACKOFF: Final = 1.0
_KEY_ALGS: Final = frozenset(SUPPORTED_ALGORITHMS)
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_UNSAFE_URL: Final = re.compile(r"[\x00-\x20\x7f-\U0010ffff]")
TENANT_PLACEHOLDER: Final = "{tenantid}"
#: The login hosts of each Microsoft cloud, as Entra's instance discovery lists them as aliases of one another
#: (``/common/discovery/instance``). A metadata address may move between hosts of one group, never elsewhere.
CLOUD_ALIASES: Final = (
    frozenset({"login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net"}),
    frozenset({"login.partner.microsoftonline.cn", "login.chinacloudapi.cn"}),
    frozenset({"login.microsoftonline.us", "login.usgovcloudapi.net"}),
)
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    """One usable JWKS key: RSA, for signatures. ``issuer`` is the key's own ``issuer`` property (spec
    §4.4)."""

    kid: str
    public_key: RSAPublicKey
    issuer: str | None = None
    #: The key's ``alg`` as published; ``None`` when the JWKS entry has none (Entra's do not).
    alg: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySet:
    """An immutable snapshot of the keys and issuer facts from one successful refresh."""

    keys: Mapping[str, SigningKey]
    fetched_at: float
    #: Issuer templates with ``{tenantid}``, for v2 (``.../v2.0``) and v1 (``https://sts.windows.net/.../``).
    issuer_v2: str
    issuer_v1: str
    #: The tenant GUID of a tenant-specific authority (taken from the metadata when configured as a domain);
    #: ``None`` for ``common``/``organizations``.
    tenant_id: str | None


class _FetchFailed(Exception):
    """A document could not be fetched (transport error, status, size, URL policy). Never carries a body."""


class _BadDocument(Exception):
    """A fetched document is unusable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Loaded:
    """What one fetch produced, before it becomes a :class:`KeySet` (``issuer_v1`` is ``None`` when the v1
    document was not asked for or could not be had)."""

    keys: dict[str, SigningKey]
    jwks_uri: str
    issuer_v2: str
    issuer_v1: str | None
    tenant_id: str | None


# -- document parsing (pure) -----------------------------------------------------------------------------


def _json_object(body: bytes, what: str) -> dict[str, object]:
    try:
        value = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise _BadDocument(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise _BadDocument(f"{what} is not a JSON object")
    return value


def _safe_url(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_URL or _UNSAFE_URL.search(value):
        raise _BadDocument(f"{what} is missing or not a URL")
    return value


def parse_metadata(body: bytes, instance: str | None = None) -> tuple[str, str | None]:
    """``(jwks_uri, issuer)`` from an OpenID configuration document; raises ``_BadDocument``.

    With ``instance``, ``jwks_uri`` and ``token_endpoint`` (when present) must pass
    :func:`pinned_url_problem` for it.
    """
    doc = _json_object(body, "metadata")
    jwks_uri = _safe_url(doc.get("jwks_uri"), "jwks_uri")
    issuer = doc.get("issuer")
    if issuer is not None:
        issuer = _safe_url(issuer, "issuer")
    if instance is not None:
        pinned = {"jwks_uri": jwks_uri}
        token_endpoint = doc.get("token_endpoint")
        if token_endpoint is not None:
            pinned["token_endpoint"] = _safe_url(token_endpoint, "token_endpoint")
        for name, url in pinned.items():
            problem = pinned_url_problem(url, instance)
            if problem is not None:
                raise _BadDocument(f"metadata {name} {url[:200]!r} refused: {problem}")
    return jwks_uri, issuer


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an absolute http(s) URL as both ``urllib`` and httpx2 (which fetches it)
    read it, or ``None`` when it has userinfo, a backslash, no host, or the two parsers disagree."""
    if "\\" in url:
        return None
    try:
        split = urlsplit(url)
        split_port = split.port
        fetched = httpx2.URL(url)
    except (ValueError, httpx2.InvalidURL):
        return None
    scheme = split.scheme.lower()
    host = (split.hostname or "").lower()
    default = _DEFAULT_PORTS.get(scheme)
    if (
        default is None
        or not host
        or "@" in split.netloc
        or fetched.userinfo
        or fetched.scheme != scheme
        or fetched.host.lower() != host
        or (default if fetched.port is None else fetched.port) != (default if split_port is None else split_port)
    ):
        return None
    return scheme, host, default if split_port is None else split_port


def pinned_url_problem(url: str, instance: str) -> str | None:
    """Why ``url`` (taken from a metadata document) may not be fetched for ``instance``, or ``None`` if it may.

    It must be an absolute http(s) URL without userinfo whose scheme, host and port equal the instance's, or
    an https URL on the default port of another login host of the instance's cloud (:data:`CLOUD_ALIASES`).
    """
    origin = _origin(url)
    if origin is None:
        return "not an absolute URL without userinfo"
    home = _origin(instance)
    if home is None or origin == home:
        return None if home is not None else "the instance is not a plain URL"
    scheme, host, port = origin
    same_cloud = any(host in group and home[1] in group for group in CLOUD_ALIASES)
    if same_cloud and scheme == "https" and port == 443 and home[0] == "https" and home[2] == 443:
        return None
    return f"not on the configured instance {home[0]}://{home[1]}:{home[2]}"


def _b64uint(value: object) -> int | None:
    if not isinstance(value, str) or len(value) > 2048 or not _B64URL.fullmatch(value):
        return None
    text = value.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if raw else None


def _short_str(value: object) -> str | None:
    if isinstance(value, str) and value and len(value) <= 256 and value.isascii() and value.isprintable():
        return value
    return None


def parse_jwks(body: bytes) -> dict[str, SigningKey]:
    """The usable keys of a JWKS document (RSA, ``use`` sig or absent, ``alg`` an RSA signature algorithm or
    absent, 2048-8192 bit modulus, exponent 65537), by ``kid``.

    Keys that are not usable are skipped; a document with none raises ``_BadDocument``.
    """
    doc = _json_object(body, "JWKS")
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise _BadDocument("JWKS has no 'keys' list")
    out: dict[str, SigningKey] = {}
    for jwk in entries[:_MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        alg = jwk.get("alg")
        if jwk.get("use", "sig") != "sig" or (alg is not None and (not isinstance(alg, str) or alg not in _KEY_ALGS)):
            continue
        kid = _short_str(jwk.get("kid"))
        if kid is None or kid in out:
            continue
        n = _b64uint(jwk.get("n"))
        e = _b64uint(jwk.get("e"))
        if n is None or e is None or not (_MIN_MODULUS_BITS <= n.bit_length() <= _MAX_MODULUS_BITS):
            continue
        if e != _RSA_EXPONENT:
            logger.warning("signing key dropped kid=%r reason=RSA public exponent is not 65537", kid)
            continue
        try:
            public_key = RSAPublicNumbers(e, n).public_key()
        except ValueError:
            continue
        issuer = jwk.get("issuer")
        out[kid] = SigningKey(
            kid=kid,
            public_key=public_key,
            issuer=issuer if isinstance(issuer, str) and issuer else None,
            alg=alg,
        )
    if not out:
        raise _BadDocument("JWKS has no usable RSA signing key")
    return out


def _template(issuer: str, tenant: str | None) -> str:
    """Turn a concrete issuer into a ``{tenantid}`` template by replacing the tenant GUID."""
    if TENANT_PLACEHOLDER in issuer or tenant is None:
        return issuer
    if tenant in issuer:
        return issuer.replace(tenant, TENANT_PLACEHOLDER)
    return issuer.replace(tenant.upper(), TENANT_PLACEHOLDER)


# -- the store -------------------------------------------------------------------------------------------


def _unknown_kid() -> InvalidToken:
    return InvalidToken("The token signing key is not known.", reason="unknown_kid")


# The fetch asks for URLs and is sent their bodies.
_Fetch = Flow[str, _Loaded]


class KeyStore:
    """Metadata and signing keys for one :class:`EntraConfig`, fetched through one :class:`HttpSeam`.

    ::

        store = KeyStore(config, http, clock)
        key, keyset = store.get_key(kid)          # or: await store.aget_key(kid)
    """

    def __init__(self, config: EntraConfig, http: HttpSeam, clock: Clock) -> None:
        self._config = config
        self._http = http
        self._clock = clock
        self._metadata_url = config.metadata_url("2.0")
        self._metadata_v1_url = config.metadata_url("1.0")
        self._configured_tenant = None if config.tenant_id in META_TENANTS else config.tenant_id.lower()
        tenant = self._configured_tenant
        self._tenant_is_guid = tenant is not None and bool(GUID.fullmatch(tenant))
        self._interval = float(config.jwks_refresh_interval)
        self._cooldown = float(config.jwks_refresh_cooldown)
        self._negative_size = max(0, int(config.jwks_unknown_kid_cache_size))
        # A follower never waits longer than the leader's requests can take (three documents at most).
        self._wait_timeout = 4 * float(config.http_timeout) + 5.0
        self._fetch_deadline = 3 * float(config.http_timeout) + 5.0
        self._lock = threading.Lock()
        self._snapshot: KeySet | None = None
        self._generation = 0
        self._flight: Flight[None] | None = None
        self._last_attempt: float | None = None
        self._last_failure: float | None = None
        self._last_forced: float | None = None
        self._issuer_v1: str | None = None
        self._negative: OrderedDict[str, float] = OrderedDict()

    @property
    def snapshot(self) -> KeySet | None:
        """The current keys, or ``None`` before the first successful refresh."""
        return self._snapshot

    # -- lookups ----------------------------------------------------------------------------------------

    def fresh_key(self, kid: str) -> tuple[SigningKey, KeySet] | None:
        """The fast path: a known kid in a snapshot younger than the refresh interval (no lock)."""
        snap = self._snapshot
        if snap is not None:
            key = snap.keys.get(kid)
            if key is not None and self._clock.monotonic() - snap.fetched_at < self._interval:
                return key, snap
        return None

    def _refuse_known_unknown(self, kid: str, snap: KeySet | None) -> None:
        """Answer a kid the negative cache holds without a refresh (and without a lock)."""
        if snap is None or kid in snap.keys:
            return
        until = self._negative.get(kid)
        if until is not None and self._clock.monotonic() < until:
            raise _unknown_kid()

    def _current(self) -> KeySet:
        snap = self._snapshot
        if snap is None:
            raise ProviderUnavailable("The token signing keys are temporarily unavailable.", reason="no_keys")
        return snap

    def _resolve(self, kid: str) -> tuple[SigningKey, KeySet]:
        snap = self._current()
        key = snap.keys.get(kid)
        if key is None:
            self._remember_unknown(kid)
            raise _unknown_kid()
        return key, snap

    def _remember_unknown(self, kid: str) -> None:
        if not self._negative_size:
            return
        with self._lock:
            self._negative[kid] = self._clock.monotonic() + self._cooldown
            self._negative.move_to_end(kid)
            while len(self._negative) > self._negative_size:
                self._negative.popitem(last=False)

    def get_key(self, kid: str) -> tuple[SigningKey, KeySet]:
        """The key for ``kid`` and the snapshot it belongs to, refreshing as the rules allow.

        Raises ``InvalidToken`` (unknown kid) or ``ProviderUnavailable`` (no keys at all).
        """
        found = self.fresh_key(kid)
        if found is not None:
            return found
        snap = self._snapshot
        self._refuse_known_unknown(kid, snap)
        self._sync_refresh(forced=snap is not None and kid not in snap.keys, seen=snap)
        return self._resolve(kid)

    async def aget_key(self, kid: str) -> tuple[SigningKey, KeySet]:
        """Async twin of :meth:`get_key`."""
        found = self.fresh_key(kid)
        if found is not None:
            return found
        snap = self._snapshot
        self._refuse_known_unknown(kid, snap)
        await self._async_refresh(forced=snap is not None and kid not in snap.keys, seen=snap)
        return self._resolve(kid)

    def refresh(self) -> KeySet:
        """Fetch metadata and keys now (startup, or an operator's request); joins a refresh in flight.

        Raises ``ProviderUnavailable`` when no keys could ever be had.
        """
        self._sync_refresh(forced=None, seen=self._snapshot)
        return self._current()

    async def arefresh(self) -> KeySet:
        """Async twin of :meth:`refresh`."""
        await self._async_refresh(forced=None, seen=self._snapshot)
        return self._current()

    # -- single flight ----------------------------------------------------------------------------------

    def _may_start(self, forced: bool | None, seen: KeySet | None, now: float) -> bool:
        """Whether a new fetch may start now (called with the lock held). ``forced``: ``True`` for an unknown
        kid, ``False`` for a stale or missing snapshot, ``None`` for an explicit refresh."""
        snap = self._snapshot
        if snap is not seen and snap is not None:
            return False  # someone refreshed since the caller looked: use that
        if snap is None or forced is None:
            return self._last_failure is None or now - self._last_failure >= _FAILURE_BACKOFF
        if forced:
            if self._last_forced is not None and now - self._last_forced < self._cooldown:
                return False
            self._last_forced = now
            return True
        # Scheduled refresh of a stale snapshot; after a failure, retry once per cooldown.
        return now - snap.fetched_at >= self._interval and (
            self._last_attempt is None or now - self._last_attempt >= self._cooldown
        )

    def _begin(
        self, forced: bool | None, seen: KeySet | None, *, asynchronous: bool
    ) -> tuple[Flight[None] | None, bool]:
        """``(flight, lead)``: the flight to lead or join, or ``(None, False)`` when no refresh may run."""
        with self._lock:
            flight = self._flight
            if flight is not None:
                return flight, False
            if not self._may_start(forced, seen, self._clock.monotonic()):
                return None, False
            flight = self._flight = Flight(asynchronous=asynchronous)
            return flight, True

    def _end(self, flight: Flight[None], loaded: _Loaded | None, failure: str | None) -> None:
        now = self._clock.monotonic()
        with self._lock:
            if loaded is not None:
                self._install(loaded, now)
            elif failure is not None:
                self._last_failure = now
            if loaded is not None or failure is not None:
                self._last_attempt = now
            self._flight = None
        flight.finish()
        if failure is not None:
            snap = self._snapshot
            logger.warning(
                "signing key refresh failed url=%s reason=%s keeping=%d keys",
                self._metadata_url,
                failure,
                len(snap.keys) if snap is not None else 0,
            )

    def _install(self, loaded: _Loaded, now: float) -> None:
        self._generation += 1
        if loaded.issuer_v1 is not None:
            self._issuer_v1 = loaded.issuer_v1
        issuer_v1 = self._issuer_v1 or "https://sts.windows.net/{tenantid}/"
        self._snapshot = KeySet(
            keys=loaded.keys,
            fetched_at=now,
            issuer_v2=loaded.issuer_v2,
            issuer_v1=issuer_v1,
            tenant_id=loaded.tenant_id,
        )
        self._last_failure = None
        logger.info(
            "signing keys refreshed url=%s keys=%d kids=%s generation=%d",
            loaded.jwks_uri,
            len(loaded.keys),
            ",".join(sorted(loaded.keys)),
            self._generation,
        )

    def _sync_refresh(self, *, forced: bool | None, seen: KeySet | None) -> None:
        flight, lead = self._begin(forced, seen, asynchronous=False)
        if flight is None:
            return
        if not lead:
            if not flight.would_deadlock(asynchronous=False):
                # (An async refresh running on this very thread's event loop cannot finish while this blocks:
                # the caller goes on with the keys it has.)
                flight.wait(self._wait_timeout)
            return
        loaded: _Loaded | None = None
        failure: str | None = None
        try:
            loaded = run(self._flow(), self._get, throw=(_FetchFailed,))
        except (_FetchFailed, _BadDocument) as exc:
            failure = str(exc)
        finally:
            self._end(flight, loaded, failure)

    async def _async_refresh(self, *, forced: bool | None, seen: KeySet | None) -> None:
        flight, lead = self._begin(forced, seen, asynchronous=True)
        if flight is None:
            return
        if not lead:
            await flight.await_done(self._wait_timeout)
            return
        loaded: _Loaded | None = None
        failure: str | None = None
        try:
            with anyio.fail_after(self._fetch_deadline):
                loaded = await arun(self._flow(), self._aget, throw=(_FetchFailed,))
        except (_FetchFailed, _BadDocument) as exc:
            failure = str(exc)
        except TimeoutError:
            failure = "timed out"
        finally:
            # Cancellation leaves both unset: not a provider failure, just released.
            self._end(flight, loaded, failure)

    # -- the fetch, written once ------------------------------------------------------------------------

    def _flow(self) -> _Fetch:
        jwks_uri, issuer = parse_metadata((yield self._metadata_url), self._config.instance)
        keys = parse_jwks((yield jwks_uri))
        tenant = self._configured_tenant
        if tenant is not None and not self._tenant_is_guid:
            # A domain was configured: the tenant GUID is the one the metadata issuer names (spec §4.2).
            found = GUID.search(issuer or "")
            if found is None:
                raise _BadDocument("metadata issuer names no tenant id")
            tenant = found.group(0).lower()
        if issuer is None:
            if tenant is None:
                raise _BadDocument("metadata has no issuer")
            issuer = f"{self._config.instance}{tenant}/v2.0"
        issuer_v1: str | None = None
        if self._issuer_v1 is None:
            try:
                _, v1 = parse_metadata((yield self._metadata_v1_url), self._config.instance)
            except (_FetchFailed, _BadDocument):
                v1 = None
            issuer_v1 = _template(v1, tenant) if v1 is not None else None
        return _Loaded(
            keys=keys,
            jwks_uri=jwks_uri,
            issuer_v2=_template(issuer, tenant),
            issuer_v1=issuer_v1,
            tenant_id=tenant,
        )

    def _check(self, url: str) -> None:
        if url.startswith("http://") and not self._config.allow_insecure_http:
            raise _FetchFailed(
                f"refused plain http URL {url[:200]!r}: only a loopback instance with allow_insecure_http=True "
                "may use http"
            )
        try:
            # https, or http to a loopback host (an opted-in config's instance is loopback, and metadata
            # addresses are pinned to it).
            self._http.check_url(url, what="url")
        except ConfigurationError:
            raise _FetchFailed(f"refused non-https URL {url[:200]!r}") from None

    @staticmethod
    def _transport_failure(exc: Exception, url: str) -> _FetchFailed:
        """A fetch failure whose text says what went wrong: the CA file, certificate verification, or the error
        type (never a body)."""
        if isinstance(exc, TrustStoreError):
            return _FetchFailed(f"{exc} (fetching {url[:200]})")
        if tls_verification_failed(exc):
            return _FetchFailed(f"TLS certificate verification failed for {url[:200]}")
        if isinstance(exc, DeadlineExceeded):
            return _FetchFailed(f"document too slow from {url[:200]}")
        return _FetchFailed(f"{type(exc).__name__} from {url[:200]}")

    @staticmethod
    def _check_response(response: httpx2.Response, url: str) -> None:
        if response.status_code != 200:
            raise _FetchFailed(f"HTTP {response.status_code} from {url[:200]}")
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_DOCUMENT_BYTES:
            raise _FetchFailed(f"document too large from {url[:200]}")

    def _too_large(self, url: str) -> _FetchFailed:
        return _FetchFailed(f"document too large from {url[:200]}")

    def _get(self, url: str) -> bytes:
        self._check(url)
        # One budget per document, the seam's, sync and async alike: a server dripping bytes is cut off.
        deadline = Deadline(self._http.deadline)
        try:
            with self._http.client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                self._check_response(response, url)
                return read_capped(
                    response, limit=MAX_DOCUMENT_BYTES, deadline=deadline, too_large=lambda: self._too_large(url)
                )
        except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError) as exc:
            raise self._transport_failure(exc, url) from None

    async def _aget(self, url: str) -> bytes:
        self._check(url)
        deadline = Deadline(self._http.deadline)
        try:
            stream = self._http.aclient.stream("GET", url, headers={"Accept": "application/json"})
            async with stream as response:
                self._check_response(response, url)
                return await aread_capped(
                    response, limit=MAX_DOCUMENT_BYTES, deadline=deadline, too_large=lambda: self._too_large(url)
                )
        except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError) as exc:
            raise self._transport_failure(exc, url) from None
