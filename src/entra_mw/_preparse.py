"""The strict token pre-parser: what a JWS compact token must satisfy before any key is looked up.

It runs in front of signature verification and refuses, with :class:`~entra_mw.errors.InvalidToken`,
anything a lenient parser would let through or choke on:

* a size cap (``EntraConfig.max_token_bytes``), ASCII only;
* exactly three segments (RFC 7515 §7.1); five segments is a JWE (RFC 7516 §9), which Entra access tokens
  for an API never are;
* canonical base64url without padding (RFC 7515 §2, RFC 4648 §5): only the URL-safe alphabet, no length
  ≡ 1 (mod 4), and zero padding bits in the last character, so one token has exactly one spelling;
* JSON (RFC 8259) that is UTF-8, with no duplicate member names (RFC 7515 §5.2 lets a parser reject them,
  and we do), no ``NaN``/``Infinity``, bounded nesting, and no string (name or value) holding a lone UTF-16
  surrogate (I-JSON, RFC 7493 §2.1: such a string cannot be encoded to UTF-8 by the code that reads it);
* a header that is an object with ``alg`` in the allowed list and a bounded ``kid``, and none of the
  headers that would make a verifier fetch or trust a key carried by the token itself (``jku``, ``x5u``,
  ``jwk``, ``x5c``: RFC 7515 §4.1.2-4.1.6) or change how it is processed (``crit`` §4.1.11, ``b64``
  RFC 7797, ``cty`` §4.1.10 (nested tokens), ``enc``/``zip`` JWE), and no case variant (``ALG``, ``Kid``)
  of a registered header parameter;
* claims of the right JSON types (``exp``/``nbf``/``iat`` finite numbers, ``aud`` a single string,
  ``iss``/``tid``/``ver``/... strings), and no claim whose name is a case variant of one the decision rests on
  (``TID`` beside or instead of ``tid``: consumers that look claims up case-insensitively read another value).

The result is a :class:`ParsedToken` holding the decoded header and claims, the exact signing input and
the raw signature; nothing in it has been verified yet.
"""

from __future__ import annotations

import binascii
import json
from typing import Any, Final, NamedTuple

from .errors import InvalidToken

__all__ = ["DECISION_CLAIMS", "HEADER_MEMO_SIZE", "ParsedToken", "preparse"]

#: At most this many distinct header segments are remembered (real issuers use a handful of keys).
HEADER_MEMO_SIZE: Final = 64

# Translating the URL-safe alphabet to the standard one lets binascii's strict decoder check it in C. The
# standard-only characters '+' and '/' and padding '=' (RFC 7515 §2) become '*', which that decoder refuses.
_URLSAFE_TO_STD: Final = bytes.maketrans(b"-_+/=", b"+/***")
# A final character that carries only zero padding bits (RFC 4648 §3.5 canonical encoding): with 2 leftover
# characters the last one encodes 4 unused bits, with 3 leftover characters 2 unused bits.
_ZERO_BITS_2: Final = frozenset(b"AQgw")
_ZERO_BITS_3: Final = frozenset(b"AEIMQUYcgkosw048")
_PAD: Final = (b"", b"", b"==", b"=")
_MISSING: Final = object()

_MAX_DEPTH: Final = 16
_MAX_KID: Final = 256
# Refused header parameters: each would make a verifier trust key material or processing rules carried by the
# token itself, or mark the token as a JWE.
_REFUSED_HEADERS: Final = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64", "cty", "enc", "zip"})
_ACCEPTED_TYP: Final = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
# The registered JWS header parameters (RFC 7515 §4.1, RFC 7797, RFC 7516): no case variant of one is accepted.
_HEADER_NAMES: Final = _REFUSED_HEADERS | {"alg", "kid", "typ", "x5t", "x5t#s256"}
# The JSON numbers Python can hold exactly are far beyond any real time; refuse what is past year 9999.
_MAX_TIME: Final = 253_402_300_799
_TIME_CLAIMS: Final = ("exp", "nbf", "iat")
_STRING_CLAIMS: Final = (
    "iss",
    "tid",
    "ver",
    "scp",
    "azp",
    "appid",
    "oid",
    "sub",
    "idtyp",
    "xms_par_app_azp",
    "xms_act_fct",
    "xms_sub_fct",
)
#: Claims the validation or the principal's answers rest on. A claim whose name case-folds to one of these but
#: is spelt differently (``TID``, ``Tid``, or ``scp`` with U+017F LONG S for the ``s``) is refused: Entra never
#: issues one, and .NET or other case-insensitive claim lookups would read it in place of (or beside) the real
#: claim.
DECISION_CLAIMS: Final = frozenset(
    {"tid", "oid", "iss", "aud", "scp", "roles", "azp", "appid", "ver", "sub", "idtyp", "exp", "nbf", "iat"}
)


class ParsedToken(NamedTuple):
    """A token that is well formed; nothing about it is verified yet. (A named tuple: it is built on every
    validation and a tuple is the cheapest immutable value.)"""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    alg: str
    kid: str

# Claim names Entra puts in access tokens (v1 and v2, optional claims included). A token whose names are all
# here cannot hold a case variant of a decision claim: each of them is its own case fold.
_ENTRA_CLAIMS: Final = frozenset(
    name
    for name in (
        *DECISION_CLAIMS,
        *_STRING_CLAIMS,
        "acct", "acr", "acrs", "aio", "amr", "appidacr", "auth_time", "azpacr", "ctry", "deviceid", "email",
        "family_name", "fwd", "given_name", "groups", "hasgroups", "idp", "in_corp", "ipaddr", "login_hint", "name",
        "nonce", "onprem_sid", "preferred_username", "puid", "pwd_exp", "pwd_url", "rh", "sid", "signin_state",
        "tenant_ctry", "tenant_region_scope", "unique_name", "upn", "uti", "verified_primary_email",
        "verified_secondary_email", "vnet", "wids", "xms_cc", "xms_ftd", "xms_idrel", "xms_pdl", "xms_pl",
        "xms_tcdt", "xms_tpl", "xms_mirid", "xms_az_rid", "xms_az_nwperimid", "xms_ssm", "xms_tdbr", "ztdid",
    )
    if name.casefold() == name
)


def _fail(description: str, reason: str) -> InvalidToken:
    return InvalidToken(description, reason=reason)


def _b64decode(segment: bytes, what: str) -> bytes:
    """Decode one canonical, unpadded base64url segment (already translated to the standard alphabet)."""
    size = len(segment)
    rest = size & 3
    if rest == 1 or size == 0:
        raise _fail(f"The token {what} is not valid base64url.", "malformed")
    if (rest == 2 and segment[-1] not in _ZERO_BITS_2) or (rest == 3 and segment[-1] not in _ZERO_BITS_3):
        raise _fail(f"The token {what} is not canonical base64url.", "malformed")
    try:
        return binascii.a2b_base64(segment + _PAD[rest], strict_mode=True)
    except binascii.Error:
        raise _fail(f"The token {what} is not valid base64url.", "malformed") from None


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # RFC 7515 §5.2: a member name must not appear twice; parsers that keep the last one disagree with
        # parsers that keep the first, which is exactly what an attacker exploits.
        raise ValueError("duplicate member name")
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_object_pairs, parse_constant=_no_constants)
_SCAN: Final = _DECODER.scan_once  # type: ignore[attr-defined]
_CONTAINERS: Final = (dict, list)


def _too_deep(value: Any, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return True
    if isinstance(value, dict):
        values: Any = value.values()
    elif isinstance(value, list):
        values = value
    else:
        return False
    return any(isinstance(item, _CONTAINERS) and _too_deep(item, depth + 1) for item in values)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        # The C scanner straight away for compact JSON (what issuers emit); the full decoder when there is
        # whitespace around the value or something to report.
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            value = _DECODER.decode(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError, UnicodeDecodeError, duplicate names, NaN and over-long integers.
        raise _fail(f"The token {what} is not valid JSON.", "malformed") from None
    if value.__class__ is not dict:
        raise _fail(f"The token {what} is not a JSON object.", "malformed")
    # Nesting can only be deep when there are many brackets: count them before walking anything.
    if text.count("[") + text.count("{") > _MAX_DEPTH and _too_deep(value, 1):
        raise _fail(f"The token {what} is nested too deeply.", "malformed")
    # Strict UTF-8 decoding never yields a surrogate, so one can only come from a \u escape: look for a
    # backslash first (one memchr; issuers rarely escape anything), then for \u, and only then re-encode
    # everything decoded, names included.
    if "\\" in text and "\\u" in text and _has_lone_surrogate(value):
        raise _fail(f"The token {what} holds a string that is not valid Unicode.", "malformed")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string in ``value`` (member names too) holds a lone UTF-16 surrogate (RFC 7493 §2.1). A
    valid pair (``\\ud83d\\ude00``) was already joined into one character by the decoder."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_header(header: dict[str, Any], algorithms: tuple[str, ...]) -> tuple[str, str]:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise _fail("The token header has no algorithm.", "bad_header")
    if alg not in algorithms:
        # 'none' (RFC 7518 §3.6) and HS* (a verifier holding an RSA public key must never treat it as an HMAC
        # secret: the classic algorithm-confusion attack) are never in the allowed list.
        raise _fail("The token signing algorithm is not accepted.", "bad_algorithm")
    if not _REFUSED_HEADERS.isdisjoint(header):
        name = min(_REFUSED_HEADERS.intersection(header))
        if name in ("enc", "zip"):
            raise _fail("Encrypted tokens are not accepted.", "jwe")
        raise _fail(f"The token header parameter '{name}' is not accepted.", "bad_header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID or not (kid.isascii() and kid.isprintable()):
        raise _fail("The token header has no usable key id.", "bad_header")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
        raise _fail("The token type is not accepted.", "bad_header")
    x5t = header.get("x5t")
    if x5t is not None and not isinstance(x5t, str):
        raise _fail("The token header is malformed.", "bad_header")
    for name in header:
        # 'ALG', 'Kid', 'JKU': a case-insensitive reader would take them for the real parameters. (Runs once
        # per distinct header segment: the memo keeps accepted headers.)
        folded = name.casefold()
        if folded != name and folded in _HEADER_NAMES:
            raise _fail(f"The token header carries a case variant of '{folded}'.", "bad_header")
    return alg, kid


def _check_claims(claims: dict[str, Any]) -> None:
    get = claims.get
    for name in _TIME_CLAIMS:
        value = get(name, _MISSING)
        if value is _MISSING:
            continue
        if value.__class__ is not int and value.__class__ is not float:
            raise _fail(f"The token claim '{name}' is not a number.", "bad_claim")
        if not 0 <= value <= _MAX_TIME:
            raise _fail(f"The token claim '{name}' is out of range.", "bad_claim")
    if "exp" not in claims:
        raise _fail("The token has no expiry.", "no_expiry")
    aud = get("aud")
    if aud is not None and aud.__class__ is not str:
        # Entra puts exactly one audience in an access token; a list (RFC 7519 allows one) is what lets a token
        # minted for several APIs be replayed at each of them.
        raise _fail("The token claim 'aud' must be a single string.", "bad_claim")
    for name in _STRING_CLAIMS:
        value = get(name)
        if value is not None and value.__class__ is not str:
            raise _fail(f"The token claim '{name}' is malformed.", "bad_claim")
    roles = get("roles")
    if roles is not None and not (roles.__class__ is list and all(r.__class__ is str for r in roles)):
        raise _fail("The token claim 'roles' is malformed.", "bad_claim")
    # Case variants: none when every name is one Entra issues (one set lookup per name, the usual case), and
    # otherwise none unless some name changes under case folding (one C pass over all the names).
    if claims.keys() <= _ENTRA_CLAIMS:
        return
    names = "\0".join(claims)
    if names.casefold() != names:
        for name in claims:
            folded = name.casefold()
            if folded != name and folded in DECISION_CLAIMS:
                raise _fail(f"The token carries a case variant of the claim '{folded}'.", "bad_claim")


def preparse(
    token: object,
    *,
    max_bytes: int,
    algorithms: tuple[str, ...],
    headers: dict[bytes, tuple[dict[str, Any], str, str]] | None = None,
) -> ParsedToken:
    """Check that ``token`` is a well-formed JWS compact token and decode it; raise ``InvalidToken``
    otherwise.

    ::

        parsed = preparse(token, max_bytes=16384, algorithms=("RS256",))
        parsed.kid, parsed.claims["aud"], parsed.signing_input, parsed.signature

    ``headers`` is an optional memo of header segments already accepted with these ``algorithms`` (every token
    one key signs has the same header, so its decoding and checks run once); it grows to
    ``HEADER_MEMO_SIZE`` entries at most. The dicts in :class:`ParsedToken` must not be mutated.
    """
    if isinstance(token, str):
        if len(token) > max_bytes:
            raise _fail("The token is too large.", "too_large")
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise _fail("The token is not valid base64url.", "malformed") from None
    elif isinstance(token, bytes | bytearray):
        if len(token) > max_bytes:
            raise _fail("The token is too large.", "too_large")
        raw = bytes(token)
    else:
        raise _fail("The token is not a string.", "malformed")
    if not raw:
        raise _fail("The token is empty.", "malformed")
    parts = raw.split(b".")
    if len(parts) != 3:
        if len(parts) == 5:
            raise _fail("Encrypted tokens (JWE) are not accepted.", "jwe")
        raise _fail("The token is not a JWS compact token (three segments).", "malformed")
    head_b64, payload_b64, sig_b64 = parts
    known = headers.get(head_b64) if headers is not None else None
    if known is None:
        header = _json_object(_b64decode(head_b64.translate(_URLSAFE_TO_STD), "header"), "header")
        alg, kid = _check_header(header, algorithms)
        if headers is not None and len(headers) < HEADER_MEMO_SIZE:
            headers[head_b64] = (header, alg, kid)
    else:
        header, alg, kid = known
    claims = _json_object(_b64decode(payload_b64.translate(_URLSAFE_TO_STD), "payload"), "payload")
    _check_claims(claims)
    signature = _b64decode(sig_b64.translate(_URLSAFE_TO_STD), "signature")
    return ParsedToken(header, claims, raw[: len(head_b64) + 1 + len(payload_b64)], signature, alg, kid)
