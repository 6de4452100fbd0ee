"""FakeEntra's key material: RSA signing keys with self-signed certificates, JWK export, test certificates.

RSA-2048 generation costs tens of milliseconds, which adds up over a test suite, so private keys come from a
small process-wide pool filled lazily (one pool per *purpose*, so a client certificate's key is never also an
Entra signing key). Every use wraps the key in a **fresh** certificate, so ``kid``/``x5t`` (the certificate's
SHA-1 thumbprint, as Entra's are, spec §4.4) are unique per use even when key material repeats after the pool
wraps around. Tests that need a key nobody else has call :func:`fresh_rsa_key`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "SigningKey",
    "b64url",
    "b64url_decode",
    "fresh_rsa_key",
    "new_signing_key",
    "pooled_rsa_key",
    "private_key_pem",
    "rsa_jwk_numbers",
    "self_signed_cert",
    "thumbprints",
    "tls_material",
]

POOL_SIZE: Final = 12

_pool_lock = threading.Lock()
_pools: dict[str, list[rsa.RSAPrivateKey]] = {}
_counters: dict[str, itertools.count[int]] = {}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    raw = text.encode("ascii") if isinstance(text, str) else text
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def fresh_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A newly generated RSA key that no pool hands out."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pooled_rsa_key(purpose: str = "signing") -> rsa.RSAPrivateKey:
    """An RSA-2048 key from the lazily filled process-wide pool for ``purpose``.

    The first :data:`POOL_SIZE` calls per purpose generate keys; later calls cycle through them, so two
    consecutive callers always get different key material.
    """
    with _pool_lock:
        pool = _pools.setdefault(purpose, [])
        index = next(_counters.setdefault(purpose, itertools.count())) % POOL_SIZE
        if index < len(pool):
            return pool[index]
    key = fresh_rsa_key()  # generated outside the lock: other threads need not wait for it
    with _pool_lock:
        if len(pool) < POOL_SIZE:
            pool.append(key)
    return key


def private_key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    # Certificates carry real dates (TLS clients check them against the real clock), not the FakeClock's.
    return datetime.datetime.now(datetime.UTC)


def self_signed_cert(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    days: int = 365,
    ca: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return builder.sign(key, hashes.SHA256())


def rsa_jwk_numbers(public_key: rsa.RSAPublicKey) -> tuple[str, str]:
    """A JWK's ``(n, e)``: the modulus and exponent as unpadded big-endian base64url (RFC 7518 §6.3.1)."""
    numbers = public_key.public_numbers()
    return (
        b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
    )


def thumbprints(cert: x509.Certificate) -> tuple[str, str]:
    """``(x5t, x5t#S256)``: base64url SHA-1 and SHA-256 of the certificate's DER."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return b64url(hashlib.sha1(der).digest()), b64url(hashlib.sha256(der).digest())  # noqa: S324 - x5t is SHA-1


@dataclass(eq=False, slots=True)
class SigningKey:
    """One RSA signing key with its certificate. ``kid`` equals ``x5t`` (Entra's convention)."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)
    kid: str
    x5t: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwk(self, issuer: str | None) -> dict[str, Any]:
        """The JWKS entry Entra serves: ``kty, use, kid, x5t, n, e, x5c, issuer`` (ED access-tokens.md)."""
        n, e = rsa_jwk_numbers(self.public_key)
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        out: dict[str, Any] = {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.x5t,
            "n": n,
            "e": e,
            # x5c holds standard (not url-safe) base64 DER, RFC 7517 §4.7.
            "x5c": [base64.b64encode(der).decode("ascii")],
        }
        if issuer is not None:
            out["issuer"] = issuer
        return out


def new_signing_key(*, fresh: bool = False) -> SigningKey:
    key = fresh_rsa_key() if fresh else pooled_rsa_key("signing")
    cert = self_signed_cert(key, "accounts.accesscontrol.windows.net", days=730)
    x5t, _ = thumbprints(cert)
    return SigningKey(private_key=key, certificate=cert, kid=x5t, x5t=x5t)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsMaterial:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def tls_material(hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> TlsMaterial:
    """A throwaway CA and a server certificate it signed, valid for ``hosts`` (IP addresses or DNS names)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = self_signed_cert(ca_key, "entra_mw FakeEntra test CA", days=30, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return TlsMaterial(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=private_key_pem(key),
    )
