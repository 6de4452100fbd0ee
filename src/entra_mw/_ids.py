"""The identifier rules, in one place: tenant and object ids (GUIDs in canonical 8-4-4-4-12 form), tenant
domains, the meta tenants, and the signature algorithms a key or a configuration may name."""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = [
    "DOMAIN",
    "GUID",
    "META_TENANTS",
    "SUPPORTED_ALGORITHMS",
    "is_domain",
    "is_guid",
    "is_loopback_host",
    "without_userinfo",
]

#: A GUID in canonical form only: ``{...}``, ``urn:uuid:`` and hyphen-less spellings are different strings to a
#: cache key or an issuer template, so they are refused rather than normalised.
GUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: A DNS name with at least two labels (``contoso.onmicrosoft.com``), as a tenant may be named.
DOMAIN: Final = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})+$")
#: Tenants that are not one directory: ``common`` and ``organizations`` (multi-tenant), ``consumers``.
META_TENANTS: Final = frozenset({"common", "organizations", "consumers"})
#: The RSA signature algorithms Entra signs with (RS256) and those a configuration may opt into.
SUPPORTED_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


def is_guid(value: object) -> bool:
    """True for a GUID in canonical 8-4-4-4-12 form (either case)."""
    return isinstance(value, str) and GUID.fullmatch(value) is not None


def is_domain(value: object) -> bool:
    return isinstance(value, str) and DOMAIN.match(value) is not None


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal (``127.0.0.0/8``, ``::1``; brackets allowed)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, for error messages."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if sep and "@" in authority:
        return f"{scheme}{sep}***@{authority.rpartition('@')[2]}{slash}{path}"
    return url
