"""Inbound token validation as Microsoft.Identity.Web does it (spec §4), plus the hardening of DESIGN §3, §5.

For each token, in order:

1. the validated-token cache, a dict keyed by the exact token string: a hit re-checks ``exp``/``nbf`` and
   that the key set it was verified against is still current, and costs one str hash and a dict lookup;
2. the strict pre-parser (:mod:`entra_mw._preparse`): size, shape, canonical base64url, JSON, header and
   claim types, ``alg`` in ``EntraConfig.algorithms`` (RS256 only by default);
3. the key by ``kid`` from the configured tenant's JWKS (:mod:`entra_mw._jwks`), refreshed as its rules
   allow; a key published with an ``alg`` signs with that algorithm only (RFC 8725 §3.1);
4. the signature, verified directly with ``cryptography`` over the exact signing input (RFC 7515 §5.2):
   PKCS#1 v1.5 for RS*, PSS with a salt as long as the hash for PS* (RFC 7518 §3.3, §3.5);
5. lifetime: ``exp`` required, ``exp``/``nbf`` with ``clock_skew`` (spec §4.5), and ``iat`` no later than
   now + ``clock_skew``;
6. audience by ``ver`` (spec §4.3): ``client_id`` for 2.0, ``api://{client_id}`` for 1.0, plus
   ``audiences``; no or another ``ver`` is refused;
7. issuer (spec §4.2): ``tid`` required (IDX40003), a GUID, and contained in ``iss`` (IDX40004); ``iss`` equal to a
   ``valid_issuers`` template or to the authority's v2/v1 issuer with ``{tenantid}`` substituted; for a
   tenant-specific authority the token's tenant must be the configured one, for ``common``/
   ``organizations`` ``allowed_tenants`` (``None`` = any tenant) decides;
8. the signing key's own ``issuer`` property (spec §4.4, IDX40009/IDX40004/IDX40005);
9. a non-empty ``scp`` or ``roles`` unless ``allow_acl_authorization`` (spec §4.6, IDW10201).

Every refusal is an :class:`~entra_mw.errors.InvalidToken` with a client-safe description and a reason
code, logged at INFO with ``kid``/``iss``/``aud``/``tid`` (never the token).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ._ids import GUID
from ._jwks import TENANT_PLACEHOLDER, KeySet, KeyStore, SigningKey
from ._preparse import ParsedToken, preparse
from ._preparse import _fail as _reject  # one factory for every refusal, parsing or checking
from ._principal import Principal
from .errors import InvalidToken, ProviderUnavailable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

    from ._clock import Clock
    from ._config import EntraConfig
    from ._http import HttpSeam

__all__ = ["TokenValidator"]

logger = logging.getLogger("entra_mw.validation")

_SCOPE_CLAIMS: Final = (
    "scp",
    "roles",
    "http://schemas.microsoft.com/identity/claims/scope",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
)
_V2_SUFFIXES: Final = ("/v2.0", "/v2.0/")
_ISSUER_MEMO_SIZE: Final = 1024
_TAIL: Final = -64
_NEVER: Final = float("-inf")


def _signature_schemes() -> dict[str, tuple[AsymmetricPadding, hashes.HashAlgorithm]]:
    out: dict[str, tuple[AsymmetricPadding, hashes.HashAlgorithm]] = {}
    for bits, digest in (("256", hashes.SHA256()), ("384", hashes.SHA384()), ("512", hashes.SHA512())):
        out["RS" + bits] = (padding.PKCS1v15(), digest)
        out["PS" + bits] = (
            padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH),
            digest,
        )
    return out


def _fact(value: Any) -> str | None:
    """A claim value fit for a log line: a short plain string (or list of strings). Claims of a refused token
    are attacker-controlled, so anything that looks like a JWT (``eyJ`` is base64url for ``{"``) is redacted
    and long values are cut."""
    if isinstance(value, list):
        value = ",".join(v for v in value[:5] if isinstance(v, str))
    if not isinstance(value, str):
        return None
    if "eyJ" in value:
        return "<redacted>"
    return value if len(value) <= 128 else value[:100] + "..."


def _grants_something(claims: dict[str, Any]) -> bool:
    """Whether the token carries a delegated scope or an app role (spec §4.6, IDW10201). A claim that is
    present but empty (``"roles": []``, ``"scp": ""``, ``null``) grants nothing and does not count: .NET turns
    an empty JSON array into no claim at all, and an empty or null value authorises nothing either."""
    for name in _SCOPE_CLAIMS:
        value = claims.get(name)
        if value.__class__ is str:
            if value and not value.isspace():
                return True
        elif value.__class__ is list and any(v.__class__ is str and v and not v.isspace() for v in value):
            return True
    return False


class _Entry:
    """A validated token: its principal, the wall-time window it may be served in, and the key set it was
    verified against (an entry from an older key set is re-validated, so one whose key left the JWKS dies)."""

    __slots__ = ("keyset", "not_before", "principal", "token", "valid_until")

    def __init__(self, token: str, principal: Principal, not_before: float, valid_until: float, keyset: KeySet) -> None:
        self.token = token
        self.principal = principal
        self.not_before = not_before
        self.valid_until = valid_until
        self.keyset = keyset


class TokenValidator:
    """Validates Entra access tokens for one :class:`EntraConfig`. Thread-safe; one per engine.

    ::

        validator = TokenValidator(config, http, clock)
        principal = validator.validate(token)          # or: await validator.avalidate(token)
    """

    def __init__(self, config: EntraConfig, http: HttpSeam, clock: Clock) -> None:
        self._clock = clock
        self._keys = KeyStore(config, http, clock)
        self._algorithms = tuple(config.algorithms)
        self._max_bytes = int(config.max_token_bytes)
        self._skew = float(config.clock_skew)
        self._audiences_v2 = frozenset((config.client_id, *config.audiences))
        self._audiences_v1 = frozenset((f"api://{config.client_id}", *config.audiences))
        self._valid_issuers = tuple(config.valid_issuers)
        self._allowed_tenants = frozenset(config.allowed_tenants) if config.allowed_tenants is not None else None
        self._schemes = _signature_schemes()
        self._allow_acl = bool(config.allow_acl_authorization)
        # Keyed by the token's last characters (its signature's tail), and every hit compares the whole token
        # string, so an entry is only ever returned for the exact token it was made for. Hashing 64 characters
        # instead of the whole token (often 1.5 KB or more, hashed afresh for each request's new string) keeps
        # both the hit and the miss cheap; a different token with the same tail only replaces the entry.
        # An OrderedDict evicts its oldest entry in O(1): deleting a plain dict's first key over and over leaves
        # dummies that every later ``next(iter(...))`` walks, which made each eviction cost microseconds.
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        # Issuer checks passed, per (kid, iss, tid): the answer depends only on those and the key set.
        self._issuers_ok: dict[tuple[str, str, str], KeySet] = {}
        self._headers: dict[bytes, tuple[dict[str, Any], str, str]] = {}
        self._cache_size = int(config.validated_token_cache_size)
        self._cache_ttl = float(config.validated_token_cache_ttl)
        self._cache_lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------------------

    def validate(self, token: str) -> Principal:
        """Verify ``token`` and return its claims; raise ``InvalidToken`` (401) or ``ProviderUnavailable``
        (503)."""
        cached = self.cached(token)
        if cached is not None:
            return cached
        parsed = self._parse(token)
        keys = self._keys
        found = keys.fresh_key(parsed.kid)
        if found is None:
            try:
                found = keys.get_key(parsed.kid)
            except (InvalidToken, ProviderUnavailable) as exc:
                self._log_rejection(exc, parsed)
                raise
        return self._finish(token, parsed, found[0], found[1])

    async def avalidate(self, token: str) -> Principal:
        """Async twin of :meth:`validate`: key fetches run on the event loop without blocking it."""
        cached = self.cached(token)
        if cached is not None:
            return cached
        parsed = self._parse(token)
        keys = self._keys
        found = keys.fresh_key(parsed.kid)
        if found is None:
            try:
                found = await keys.aget_key(parsed.kid)
            except (InvalidToken, ProviderUnavailable) as exc:
                self._log_rejection(exc, parsed)
                raise
        return self._finish(token, parsed, found[0], found[1])

    def refresh(self) -> None:
        """Fetch metadata and signing keys now; raises ``ProviderUnavailable`` if no keys can be had."""
        self._keys.refresh()

    async def arefresh(self) -> None:
        """Async twin of :meth:`refresh`."""
        await self._keys.arefresh()

    # -- the checks -------------------------------------------------------------------------------------

    def _parse(self, token: object) -> ParsedToken:
        try:
            return preparse(token, max_bytes=self._max_bytes, algorithms=self._algorithms, headers=self._headers)
        except InvalidToken as exc:
            self._log_rejection(exc, None)
            raise

    def cached(self, token: object) -> Principal | None:
        """The validated-token cache: the principal while the entry is in its window and its key set current."""
        if token.__class__ is not str:
            return None
        tail = token[_TAIL:]
        entry = self._cache.get(tail)
        if entry is None or entry.token != token:
            return None
        if entry.not_before <= self._clock.time() < entry.valid_until and entry.keyset is self._keys.snapshot:
            return entry.principal
        self._cache.pop(tail, None)
        return None

    def _finish(self, token: object, parsed: ParsedToken, key: SigningKey, keyset: KeySet) -> Principal:
        try:
            principal, valid_until, not_before = self._verify(parsed, key, keyset)
        except InvalidToken as exc:
            self._log_rejection(exc, parsed)
            raise
        if token.__class__ is str:
            cache = self._cache
            if len(cache) >= self._cache_size:
                self._evict()
            cache[token[_TAIL:]] = _Entry(token, principal, not_before, valid_until, keyset)
        return principal

    def _verify(self, parsed: ParsedToken, key: SigningKey, keyset: KeySet) -> tuple[Principal, float, float]:
        if key.alg is not None and key.alg != parsed.alg:
            # RFC 8725 §3.1: a key is used with one algorithm; the JWKS says which.
            raise _reject("The token signing algorithm does not match its key.", "bad_algorithm")
        pad, digest = self._schemes[parsed.alg]
        try:
            key.public_key.verify(parsed.signature, parsed.signing_input, pad, digest)
        except InvalidSignature:
            raise _reject("The token signature is invalid.", "bad_signature") from None
        claims = parsed.claims
        now = self._clock.time()
        skew = self._skew
        # Lifetime (spec §4.5): exp is required (the pre-parser made sure it is a number).
        exp = claims["exp"]
        if now - skew >= exp:
            raise _reject("The token has expired.", "expired")
        nbf = claims.get("nbf")
        if nbf is not None and now + skew < nbf:
            raise _reject("The token is not valid yet.", "not_yet_valid")
        iat = claims.get("iat")
        if iat is not None and now + skew < iat:
            raise _reject("The token was issued in the future.", "issued_in_future")
        # Audience by token version (spec §4.3).
        ver = claims.get("ver")
        if ver == "2.0":
            accepted = self._audiences_v2
        elif ver == "1.0":
            accepted = self._audiences_v1
        else:
            raise _reject("The token version is not supported.", "bad_version")
        # The pre-parser let through only a string or nothing.
        if claims.get("aud") not in accepted:
            raise _reject("The token audience is not accepted.", "bad_audience")
        memo = (key.kid, claims.get("iss"), claims.get("tid"))
        if self._issuers_ok.get(memo) is not keyset:  # type: ignore[arg-type]
            self._check_issuer(claims, key, keyset)
            if len(self._issuers_ok) >= _ISSUER_MEMO_SIZE:
                self._issuers_ok.clear()
            self._issuers_ok[memo] = keyset  # type: ignore[index]
        if not self._allow_acl and not _grants_something(claims):
            # IDW10201: a token with neither delegated scopes nor app roles authorises nothing.
            raise _reject("Neither scope nor roles claim was found in the token.", "no_scope_or_roles")
        valid_until = min(exp + skew, now + self._cache_ttl)
        not_before = nbf - skew if nbf is not None else _NEVER
        return Principal._owning(claims), valid_until, not_before

    def _check_issuer(self, claims: dict[str, Any], key: SigningKey, keyset: KeySet) -> None:
        iss = claims.get("iss")
        tid = claims.get("tid")
        if not iss:
            raise _reject("The token has no issuer.", "bad_issuer")
        if not tid:
            # IDX40003: the tenant cannot be determined (B2C issuers without tid are not supported).
            raise _reject("The token has no tenant id.", "no_tenant")
        if not GUID.fullmatch(tid):
            # 'common', a domain, 'x/../y' or '{guid}' would otherwise be substituted into the issuer templates
            # (and reported as principal.tid) as long as the token's iss was built the same way.
            raise _reject("The token tenant id is not a GUID.", "bad_tenant")
        if tid not in iss:
            raise _reject("The token issuer does not match its tenant.", "tid_mismatch")  # IDX40004
        tenant = tid.lower()
        matched = any(template.replace(TENANT_PLACEHOLDER, tid) == iss for template in self._valid_issuers)
        if not matched and (keyset.tenant_id is None or tenant == keyset.tenant_id):
            template = keyset.issuer_v2 if iss.endswith(_V2_SUFFIXES) else keyset.issuer_v1
            matched = template.replace(TENANT_PLACEHOLDER, tid) == iss
        if not matched:
            raise _reject("The token issuer is not accepted.", "bad_issuer")  # IDX40001
        if self._allowed_tenants is not None and tenant not in self._allowed_tenants:
            raise _reject("The token's tenant is not allowed.", "tenant_not_allowed")
        if key.issuer:
            # Spec §4.4: a key that names its issuer signs only for it (templates after substituting tid). The
            # token's tenant in the v2 issuer form also counts, so that v1 tokens (sts.windows.net) pass against
            # v2 keys; using the v2 *template* (not a tenant-specific metadata issuer as served) keeps another
            # tenant's token from matching a key that names this tenant.
            effective = key.issuer.replace(TENANT_PLACEHOLDER, tid)
            if effective != iss and effective != keyset.issuer_v2.replace(TENANT_PLACEHOLDER, tid):
                raise _reject(
                    "The token was signed by a key that does not belong to its issuer.", "key_issuer_mismatch"
                )  # IDX40005

    # -- the validated-token cache ----------------------------------------------------------------------

    def _evict(self) -> None:
        cache = self._cache
        with self._cache_lock:
            while len(cache) >= self._cache_size:
                # Oldest first: entries live minutes at most, so insertion order is nearly expiry order.
                try:
                    cache.popitem(last=False)
                except KeyError:
                    break

    # -- logging ----------------------------------------------------------------------------------------

    def _log_rejection(self, exc: InvalidToken | ProviderUnavailable, parsed: ParsedToken | None) -> None:
        level = logging.WARNING if isinstance(exc, ProviderUnavailable) else logging.INFO
        if not logger.isEnabledFor(level):
            return
        if parsed is None:
            logger.log(level, "token rejected reason=%s", exc.reason)
            return
        claims = parsed.claims
        logger.log(
            level,
            "token rejected reason=%s kid=%r iss=%r aud=%r tid=%r",
            exc.reason,
            parsed.kid,
            _fact(claims.get("iss")),
            _fact(claims.get("aud")),
            _fact(claims.get("tid")),
        )
