"""The attack-token catalogue: what an outside tester throws at a protected route, each built with FakeEntra's
``mint_raw`` / ``sign`` from a valid token's claims. ``catalogue(world)`` returns ``(name, token)`` pairs; every
one of them must be refused (400/401), except those named "accepted: …" (200) and "lacks: …" (403)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from entra_mw.testing._keys import b64url

from ._adapters import RESOURCE, SCOPE, World

OTHER_TENANT = "99999999-8888-7777-6666-555555555555"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _standard(segment: str) -> str:
    return segment.replace("-", "+").replace("_", "/")


def _spare_bits_set(segment: str) -> str:
    """The same bytes spelled with the unused low bits of the last character set (RFC 4648 §3.5)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = {2: 0b1111, 3: 0b11}.get(len(segment) % 4, 0)
    if not spare:
        return segment + "A"  # a lone sixth bit group: no whole byte, not valid base64 at all
    last = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[last | 1]


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def expected(name: str) -> set[int]:
    """The verdicts the catalogue allows for the token called ``name``."""
    if name.startswith("accepted:"):
        return {200}
    if name.startswith("lacks:"):
        return {403}
    return {400, 401}


def catalogue(world: World) -> list[tuple[str, str]]:
    fake = world.fake
    kid = fake.current_kid
    claims = world.claims()
    key = fake.signing_key()
    header: dict[str, Any] = {"typ": "JWT", "alg": "RS256", "kid": kid}
    tid = claims["tid"]
    host = fake.authority_host
    now = int(fake.clock.time())

    def signed(change: dict[str, Any] | None = None, hdr: dict[str, Any] | None = None) -> str:
        body = {**claims}
        for name, value in (change or {}).items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        return fake.mint_raw({**header, **(hdr or {})}, body)

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger_pem = stranger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    good = world.user_token(SCOPE)
    h, p, s = good.split(".")
    sig = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    n_bytes = (key.public_key.public_numbers().n.bit_length() + 7) // 8
    modulus = key.public_key.public_numbers().n
    malleable = (int.from_bytes(sig, "big") + modulus).to_bytes(n_bytes + 1, "big")
    zero_prefixed = _b64(b"\x00" + sig)

    tokens: list[tuple[str, str]] = [
        ("accepted: valid with the scope", good),
        ("lacks: another scope", signed({"scp": "Other.Read"})),
        # -- algorithms
        ("alg none", fake.mint_raw({**header, "alg": "none"}, claims, alg="none")),
        ("alg None", fake.mint_raw({**header, "alg": "None"}, claims, alg="none")),
        ("alg none with signature", fake.mint_raw({**header, "alg": "none"}, claims, alg="none") + "AAAA"),
        ("HS256 with the public key as secret", fake.mint_raw({**header, "alg": "HS256"}, claims, alg="HS256")),
        ("HS256 with the JWKS's n", fake.mint_raw({**header, "alg": "HS256"}, claims, alg="HS256", key=b64url(
            modulus.to_bytes(n_bytes, "big")))),
        ("RS512 header, RS256 signature", fake.mint_raw({**header, "alg": "RS512"}, claims)),
        ("RS512 signed", fake.mint_raw({**header, "alg": "RS512"}, claims, alg="RS512")),
        ("PS256 signed", fake.mint_raw({**header, "alg": "PS256"}, claims, alg="PS256")),
        ("ES256 signed", fake.mint_raw({**header, "alg": "ES256"}, claims, alg="ES256")),
        ("alg missing", fake.mint_raw({"typ": "JWT", "kid": kid}, claims)),
        ("alg as a list", fake.mint_raw({**header, "alg": ["RS256"]}, claims)),
        # -- key injection
        ("unknown kid, stranger's key", fake.mint_raw({**header, "kid": "attacker"}, claims, key=stranger_pem)),
        ("kid missing", fake.mint_raw({"typ": "JWT", "alg": "RS256"}, claims)),
        ("kid path traversal", fake.mint_raw({**header, "kid": "../../../../etc/passwd"}, claims)),
        ("kid as an object", fake.mint_raw({**header, "kid": {"$ne": ""}}, claims)),
        ("kid huge", fake.mint_raw({**header, "kid": "k" * 5000}, claims)),
        ("jku", fake.mint_raw({**header, "jku": "https://attacker.example/jwks"}, claims, key=stranger_pem)),
        ("x5u", fake.mint_raw({**header, "x5u": "https://attacker.example/cert.pem"}, claims, key=stranger_pem)),
        ("jwk embedded", fake.mint_raw({**header, "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}, claims,
                                       key=stranger_pem)),
        ("x5c embedded", fake.mint_raw({**header, "x5c": ["MIIB"]}, claims, key=stranger_pem)),
        ("jku on a valid signature", signed(hdr={"jku": "https://attacker.example/jwks"})),
        ("cty JWT (nested)", signed(hdr={"cty": "JWT"})),
        ("crit unknown", signed(hdr={"crit": ["exp"], "exp": 1})),
        ("crit b64", signed(hdr={"crit": ["b64"], "b64": False})),
        ("JWE compact", f"{_b64(json.dumps({'alg': 'RSA-OAEP', 'enc': 'A256GCM', 'kid': kid}).encode())}.AAAA.AAAA."
                        "AAAA.AAAA"),
        ("enc on a JWS", signed(hdr={"enc": "A256GCM"})),
        # -- audience
        ("wrong aud", signed({"aud": world.scn.api.app_id})),
        ("aud as a list", signed({"aud": [world.server.app_id, RESOURCE]})),
        ("aud empty list", signed({"aud": []})),
        ("aud with trailing slash", signed({"aud": RESOURCE + "/"})),
        ("aud upper-case GUID", signed({"aud": world.server.app_id.upper()})),
        ("aud missing", signed({"aud": None})),
        ("aud exchange", signed({"aud": "api://AzureADTokenExchange"})),
        # -- issuer / tenant
        # Microsoft.Identity.Web picks the issuer's metadata by the issuer's own form, not by ``ver`` (spec §4.2).
        ("accepted: v1 issuer on a v2 token", signed({"iss": f"https://sts.windows.net/{tid}/"})),
        ("v2 issuer with ver 1.0", signed({"ver": "1.0"})),
        ("other tenant iss+tid", signed({"iss": f"https://{host}/{OTHER_TENANT}/v2.0", "tid": OTHER_TENANT})),
        ("other tenant tid only", signed({"tid": OTHER_TENANT})),
        ("other tenant iss only", signed({"iss": f"https://{host}/{OTHER_TENANT}/v2.0"})),
        ("literal {tenantid} issuer", signed({"iss": f"https://{host}/{{tenantid}}/v2.0", "tid": "{tenantid}"})),
        ("non-GUID tid", signed({"tid": "common", "iss": f"https://{host}/common/v2.0"})),
        ("tid upper-case", signed({"tid": tid.upper(), "iss": f"https://{host}/{tid.upper()}/v2.0"})),
        ("issuer on another host", signed({"iss": f"https://evil.example/{tid}/v2.0"})),
        ("issuer as a list", signed({"iss": [claims["iss"]]})),
        ("iss missing", signed({"iss": None})),
        # -- case variants and odd text
        ("Aud beside aud", signed({"Aud": RESOURCE})),
        ("SCP beside scp", signed({"SCP": SCOPE, "scp": "Nothing"})),
        ("lone surrogate in a claim", fake.mint_raw(header, json.dumps({**claims, "name": "x"}).replace(
            '"name": "x"', '"name": "\\ud800"').encode())),
        ("lone surrogate in kid", fake.mint_raw(b'{"typ":"JWT","alg":"RS256","kid":"\\udfff"}', claims)),
        ("lacks: NUL in scp", signed({"scp": SCOPE + "\x00"})),
        ("scp as a list", signed({"scp": [SCOPE]})),
        ("roles as a string", signed({"roles": "Tools.All", "scp": None})),
        ("neither scp nor roles", signed({"scp": None})),
        # -- structure
        ("duplicate aud key", fake.mint_raw(header, json.dumps(claims)[:-1].encode() + b',"aud":"x"}')),
        ("duplicate alg key", fake.mint_raw(b'{"alg":"none","alg":"RS256","kid":"' + kid.encode() + b'"}', claims)),
        ("deep JSON payload", fake.mint_raw(header, _deep(5000))),
        ("deep JSON header", fake.mint_raw(_deep(5000), claims)),
        ("payload is a list", fake.mint_raw(header, b"[1,2,3]")),
        ("payload is not JSON", fake.mint_raw(header, b"\xff\xfe not json")),
        ("header is a string", fake.mint_raw(b'"RS256"', claims)),
        ("huge number", fake.mint_raw(header, json.dumps(claims)[:-1].encode() + b',"x":1' + b"0" * 5000 + b"}")),
        ("NaN exp", fake.mint_raw(header, json.dumps({**claims, "exp": 1})[:-1].encode().replace(
            b'"exp": 1', b'"exp": NaN') + b"}")),
        ("huge token", signed({"pad": "A" * 200_000})),
        ("two segments", f"{h}.{p}"),
        ("four segments", f"{h}.{p}.{s}.{s}"),
        ("padded segments", f"{h}=.{p}.{s}"),
        ("non-canonical base64 (spare bits set)", f"{h}.{p}.{_spare_bits_set(s)}"),
        ("base64 standard alphabet", f"{h}.{_standard(p)}.{_standard(s)}"),
        ("signature stripped", f"{h}.{p}."),
        ("signature plus modulus", f"{h}.{p}.{_b64(malleable)}"),
        ("signature with a zero byte prefix", f"{h}.{p}.{zero_prefixed}"),
        ("signature truncated", f"{h}.{p}.{_b64(sig[:-1])}"),
        ("signature of another payload", f"{h}.{_b64(json.dumps({**claims, 'scp': 'Admin'}).encode())}.{s}"),
        # -- time
        ("expired", signed({"exp": now - 3600})),
        ("expired just beyond skew", signed({"exp": now - 301})),
        ("nbf in the future", signed({"nbf": now + 3600})),
        ("iat in the future", signed({"iat": now + 3600})),
        ("exp as a string", signed({"exp": str(now + 3600)})),
        ("exp boolean", signed({"exp": True})),
        ("exp huge", signed({"exp": 10**400})),
        ("exp missing", signed({"exp": None})),
        # -- refresh forcing
        ("unknown kid, FakeEntra-looking", fake.mint_raw({**header, "kid": str(uuid.uuid4())}, claims)),
    ]
    return tokens
