"""Reading a token for people: header and claims without verification, times as dates. Never shows the signature."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from typing import Any

__all__ = ["decode_token", "describe_token"]

_PARTS = ("header", "payload")
_TIME_CLAIMS = ("iat", "nbf", "exp")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _segment(segment: str, index: int) -> dict[str, Any]:
    where = f"the {_PARTS[index]} (part {index + 1} of 3)"
    if not segment:
        raise ValueError(f"{where} is empty")
    try:
        raw = base64.urlsafe_b64decode((segment + "=" * (-len(segment) % 4)).encode("ascii"))
    except (ValueError, UnicodeError, binascii.Error):
        raise ValueError(f"{where} is not base64url") from None
    try:
        # NaN and Infinity are not JSON (RFC 8259); refusing them keeps the output readable by jq.
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeError, RecursionError):
        raise ValueError(f"{where} is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where} is JSON but not an object")
    return value


def decode_token(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a compact JWT into its header and claims without verifying anything.

    Raises ``ValueError`` naming the part that cannot be read.
    """
    parts = token.strip().split(".")
    if len(parts) == 5:
        raise ValueError("this is an encrypted token (JWE): its claims cannot be read without the key")
    if len(parts) != 3:
        raise ValueError(f"a JWT has 3 dot-separated parts; this has {len(parts)}")
    return _segment(parts[0], 0), _segment(parts[1], 1)


def _date(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat().replace("+00:00", "Z")


def describe_token(token: str) -> dict[str, Any]:
    """``{"header", "claims", "dates", "signature": "<elided>"}`` for ``entra-mw decode`` and ``token --decode``.

    ``dates`` holds ``iat``/``nbf``/``exp`` as ISO 8601 UTC dates.
    """
    header, claims = decode_token(token)
    dates = {name: text for name in _TIME_CLAIMS if (text := _date(claims.get(name))) is not None}
    return {"header": header, "claims": claims, "dates": dates, "signature": "<elided>"}
