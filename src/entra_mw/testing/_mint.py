"""Token minting: Entra access-token claim shapes (spec §3.7, §4; ED access-tokens.md) and raw JWS assembly.

``build_claims`` is pure: the caller (``FakeEntra.issue_token``) resolves the directory records and the clock.
``encode_jws`` builds any compact JWS, including deliberately broken ones, for attack tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ._keys import b64url
from ._registry import AgentIdentity, AgentUser, App, User

__all__ = [
    "EXCHANGE_AUDIENCE",
    "OIDC_SCOPES",
    "MintRequest",
    "build_claims",
    "encode_jws",
    "fmi_subject",
    "pairwise_sub",
]

EXCHANGE_AUDIENCE: Final = "api://AzureADTokenExchange"
"""The token-exchange resource: audience of T1/T2 and of FIC assertions (spec §3.2)."""

OIDC_SCOPES: Final = frozenset({"openid", "profile", "email", "offline_access"})
"""The OpenID Connect scopes: they shape the token response and never appear in an access token's ``scp``."""

# Facet values (spec §3.7): 11 AgentIdentity, 13 AgentIDUser; 3 is a common companion facet in real tokens.
_ACT_FCT: Final = "3 11"
_SUB_FCT_APP: Final = "3 11"
_SUB_FCT_AGENT_USER: Final = "3 13"


def _guid_b64(guid: str) -> str:
    # Entra encodes GUIDs in .NET byte order (Guid.ToByteArray(), i.e. the little-endian first three fields).
    return b64url(uuid.UUID(guid).bytes_le)


def fmi_subject(tenant_id: str, app_id: str, path: str) -> str:
    """T1's ``sub``: ``/eid1/c/pub/t/{b64url tenant}/a/{b64url app}/{fmi_path}`` (spec §3.7, §8)."""
    return f"/eid1/c/pub/t/{_guid_b64(tenant_id)}/a/{_guid_b64(app_id)}/{path}"


def pairwise_sub(subject_oid: str, client_app_id: str) -> str:
    """A user's ``sub``: stable per (user, client), opaque, as Entra's pairwise subjects are."""
    return b64url(hashlib.sha256(f"{subject_oid.lower()}|{client_app_id.lower()}".encode()).digest())


def _opaque(nbytes: int) -> str:
    return b64url(secrets.token_bytes(nbytes))


def normalize_scopes(scopes: Iterable[str], resource: App | None) -> list[str]:
    """Short scope names as ``scp`` has them (``api://x/Weather.Read`` → ``Weather.Read``); no OIDC scopes."""
    prefixes: list[str] = []
    if resource is not None:
        prefixes = [u.rstrip("/") + "/" for u in resource.identifier_uris] + [resource.app_id + "/"]
    out: list[str] = []
    for scope in scopes:
        name = scope
        for prefix in prefixes:
            if scope.lower().startswith(prefix.lower()):
                name = scope[len(prefix) :]
                break
        if name in OIDC_SCOPES or not name or name in out:
            continue
        out.append(name)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class MintRequest:
    """Everything ``build_claims`` needs, already resolved."""

    authority_host: str
    tenant_id: str
    resource: App | None  # None: the token-exchange audience
    client: App | AgentIdentity
    blueprint: App | None  # the agent's blueprint when client is an AgentIdentity
    user: User | AgentUser | None
    scopes: list[str]
    roles: list[str]
    version: int
    now: int
    lifetime: int
    fmi_path: str | None
    azpacr: str


def build_claims(req: MintRequest) -> dict[str, Any]:
    """The claim set Entra would issue for ``req`` (spec §3.7; ED access-tokens.md, agent-token-claims.md)."""
    tid = req.tenant_id
    v1 = req.version == 1
    client_id = req.client.app_id
    if req.fmi_path is not None or req.resource is None:
        aud = EXCHANGE_AUDIENCE
    elif v1:
        aud = req.resource.identifier_uris[0] if req.resource.identifier_uris else f"api://{req.resource.app_id}"
    else:
        aud = req.resource.app_id
    claims: dict[str, Any] = {
        "aud": aud,
        "iss": f"https://sts.windows.net/{tid}/" if v1 else f"https://{req.authority_host}/{tid}/v2.0",
        "iat": req.now,
        "nbf": req.now,
        "exp": req.now + req.lifetime,
        "aio": _opaque(60),
    }
    if v1:
        claims["appid"] = client_id
        claims["appidacr"] = req.azpacr
    else:
        claims["azp"] = client_id
        claims["azpacr"] = req.azpacr

    user = req.user
    if user is None:
        claims["idtyp"] = "app"
        claims["oid"] = req.client.sp_object_id
        claims["sub"] = req.client.sp_object_id
        if req.roles:
            claims["roles"] = list(req.roles)
    else:
        claims["idtyp"] = "user"
        if v1:
            claims["acr"] = "1"
            claims["amr"] = ["pwd"]
        claims["name"] = user.display_name or user.upn.split("@", 1)[0]
        claims["oid"] = user.object_id
        if v1:
            claims["unique_name"] = user.upn
            claims["upn"] = user.upn
        else:
            claims["preferred_username"] = user.upn
        claims["scp"] = " ".join(req.scopes)
        claims["sub"] = pairwise_sub(user.object_id, client_id)
        if req.roles:
            claims["roles"] = list(req.roles)

    if req.fmi_path is not None:
        # T1 (spec §3.2): v2 shape with ``azp``; SK reports ``appid`` = blueprint too, so both are present.
        claims["appid"] = client_id
        claims["sub"] = fmi_subject(tid, client_id, req.fmi_path)

    claims["rh"] = f"1.A{_opaque(45)}."
    claims["tid"] = tid
    claims["uti"] = _opaque(16)
    claims["ver"] = "1.0" if v1 else "2.0"

    if isinstance(req.client, AgentIdentity):
        emit = req.resource is None or req.resource.optional_agent_claims
        if emit:
            claims["xms_act_fct"] = _ACT_FCT
            claims["xms_idrel"] = "7" if user is None else "1"
            claims["xms_par_app_azp"] = req.client.blueprint_app_id
            if user is None:
                claims["xms_sub_fct"] = _SUB_FCT_APP
            elif isinstance(user, AgentUser):
                claims["xms_sub_fct"] = _SUB_FCT_AGENT_USER
            # Agent OBO for a human user: xms_sub_fct is not specified (spec §3.7, §8), so it is left out.
        else:
            # Observed caveat (spec §3.7): custom-API tokens often lack the agent claims and idtyp.
            claims.pop("idtyp", None)
    return claims


# -- JWS ----------------------------------------------------------------------------------------------------

_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


def _json_segment(part: bytes | Mapping[str, Any]) -> bytes:
    if isinstance(part, bytes | bytearray):
        return bytes(part)
    return json.dumps(dict(part), separators=(",", ":")).encode()


def _load_private(key: Any) -> Any:
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes) and key.lstrip().startswith(b"-----BEGIN"):
        return serialization.load_pem_private_key(key, password=None)
    return key


def sign_input(signing_input: bytes, *, alg: str, key: Any) -> bytes:
    """Sign ``signing_input`` with ``alg`` (RS*, PS*, ES*, HS*; ``none`` gives an empty signature)."""
    if alg.lower() == "none":
        return b""
    family, bits = alg[:2].upper(), alg[2:]
    hash_cls = _HASHES.get(bits)
    if hash_cls is None:
        raise ValueError(f"unsupported alg {alg!r}")
    if family == "HS":
        secret = key.encode() if isinstance(key, str) else key
        if not isinstance(secret, bytes):
            raise TypeError("HS* needs a bytes or str key")
        return hmac.new(secret, signing_input, getattr(hashlib, f"sha{bits}")).digest()
    private = _load_private(key)
    if family in {"RS", "PS"}:
        if not isinstance(private, rsa.RSAPrivateKey):
            raise TypeError(f"{alg} needs an RSA private key")
        pad: padding.AsymmetricPadding
        if family == "RS":
            pad = padding.PKCS1v15()
        else:
            pad = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=padding.PSS.DIGEST_LENGTH)
        return private.sign(signing_input, pad, hash_cls())
    if family == "ES":
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{alg} needs an EC private key")
        der = private.sign(signing_input, ec.ECDSA(hash_cls()))
        r, s = decode_dss_signature(der)
        size = (private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")  # JWS wants raw r||s (RFC 7518 §3.4)
    raise ValueError(f"unsupported alg {alg!r}")


def encode_jws(
    header: bytes | Mapping[str, Any],
    payload: bytes | Mapping[str, Any],
    *,
    alg: str,
    key: Any,
    signature: bytes | None = None,
) -> str:
    """Compact JWS from raw or JSON parts; ``signature`` (when given) is used verbatim instead of signing."""
    signing_input = f"{b64url(_json_segment(header))}.{b64url(_json_segment(payload))}".encode("ascii")
    sig = signature if signature is not None else sign_input(signing_input, alg=alg, key=key)
    return f"{signing_input.decode('ascii')}.{b64url(sig)}"
