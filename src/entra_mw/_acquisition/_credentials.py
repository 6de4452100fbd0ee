"""Turn :mod:`entra_mw.credentials` values into MSAL ``client_credential`` values (spec §2.2, §3.6).

* ``ClientSecret`` → the secret string (MSAL sends it as ``client_secret`` in the body).
* ``CertificateCredential`` (PEM file or text, PFX file or base64, optional password) → ``{"private_key": pem,
  "thumbprint": sha1}`` (RS256, ``x5t``), or with ``send_x5c`` ``{"private_key": pem, "public_certificate":
  pem}`` (MSAL then signs PS256 with ``x5t#S256`` and sends ``x5c`` for subject-name/issuer authentication).
* ``SignedAssertionFile`` → a callable re-reading the file when it changes (the kubelet rotates it).
* ``ManagedIdentityAssertion`` → a callable returning a managed-identity token for
  ``api://AzureADTokenExchange`` through MSAL's ``ManagedIdentityClient`` (which caches it).
* ``AssertionCallback`` → a callable passing MSAL's context dict on when the user's function takes one
  argument.

Several credentials are tried in order: the first that loads is used, and after Entra rejects it as an invalid
certificate, secret or signed assertion the engine moves on to the next one, once
(``MaxCertificateRetries = 1``, spec §2.2).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import inspect
import logging
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..credentials import (
    AssertionCallback,
    CertificateCredential,
    ClientSecret,
    Credential,
    ManagedIdentityAssertion,
    SignedAssertionFile,
)
from ..errors import ConfigurationError, TokenAcquisitionError

if TYPE_CHECKING:
    from .._clock import Clock
    from ._msal_http import MsalHttpClient

__all__ = [
    "INVALID_CREDENTIAL_CODES",
    "CredentialChain",
    "LoadedCredential",
    "is_invalid_credential_error",
    "load_certificate",
    "load_credential",
]

logger = logging.getLogger("entra_mw.acquisition.credentials")

#: AADSTS codes meaning "this client credential is wrong" (bad signature, unknown or expired certificate,
#: invalid or expired secret, assertion outside its validity window): the cue to try the next configured
#: credential.
INVALID_CREDENTIAL_CODES: Final = frozenset(
    {700027, 700024, 7000215, 7000222, 7000274, 7000277, 1000502, 50012, 700023}
)
_MAX_ASSERTION_BYTES: Final = 64 * 1024
_MAX_CERT_FILE_BYTES: Final = 1024 * 1024


def is_invalid_credential_error(error: str | None, codes: Sequence[int]) -> bool:
    """True when Entra refused the client credential itself (spec §2.2, Id.Web's
    ``IsInvalidClientCertificateOrSignedAssertionError``)."""
    return any(code in INVALID_CREDENTIAL_CODES for code in codes) and error in (
        None,
        "invalid_client",
        "invalid_request",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedCredential:
    """A credential ready for MSAL. ``label`` is safe to log; ``value`` never is."""

    index: int
    kind: str
    label: str
    value: str | dict[str, Any] = field(repr=False)


# -- certificates ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateMaterial:
    private_key_pem: str = field(repr=False)
    certificate_pem: str
    sha1_thumbprint: str
    sha256_thumbprint: str


def _read_bytes(path: str, what: str, limit: int = _MAX_CERT_FILE_BYTES) -> bytes:
    """The file's bytes, at most ``limit``. Only a regular file is read: a FIFO, a device or a socket at a
    credential path could feed bytes forever (its size reads as 0), so it is refused before any read, and the
    read itself stops at ``limit + 1`` bytes whatever the file claims."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise ConfigurationError(f"{what} {path!r} is a directory", key=what)
            if not stat.S_ISREG(mode):
                raise ConfigurationError(f"{what} {path!r} is not a regular file", key=what)
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise ConfigurationError(f"{what} {path!r} is larger than {limit} bytes", key=what)
        return data
    except FileNotFoundError:
        raise ConfigurationError(f"{what} {path!r} does not exist", key=what) from None
    except IsADirectoryError:
        raise ConfigurationError(f"{what} {path!r} is a directory", key=what) from None
    except PermissionError:
        raise ConfigurationError(f"{what} {path!r} is not readable (permission denied)", key=what) from None
    except OSError as exc:
        raise ConfigurationError(
            f"{what} {path!r} cannot be read ({exc.strerror or type(exc).__name__})", key=what
        ) from None


def load_certificate(cred: CertificateCredential) -> CertificateMaterial:
    """Load the private key and certificate of ``cred`` (PEM or PKCS#12), checking that they belong together.

    Raises ``ConfigurationError`` naming the problem (never the key material).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    what = "CertificateCredential"
    password = cred.password.encode() if cred.password else None
    if cred.path:
        raw = _read_bytes(cred.path, "CertificateDiskPath")
        source = f"path {cred.path!r}"
    elif cred.pem:
        raw = cred.pem.encode()
        source = "pem"
    else:
        try:
            raw = base64.b64decode("".join((cred.base64 or "").split()), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                "CertificateCredential.base64 is not valid base64", key="Base64EncodedValue"
            ) from None
        source = "base64"
    if not raw.strip():
        raise ConfigurationError(f"{what} ({source}) is empty", key=what)

    key: Any
    certs: list[x509.Certificate]
    if raw.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(raw, password=password)
        except TypeError:
            raise ConfigurationError(
                f"{what} ({source}): the private key is encrypted and no password was given"
                if password is None
                else f"{what} ({source}): a password was given but the private key is not encrypted",
                key="CertificatePassword",
            ) from None
        except ValueError:
            raise ConfigurationError(
                f"{what} ({source}): no readable private key (wrong password, or the PEM holds no key)",
                key=what,
            ) from None
        try:
            certs = x509.load_pem_x509_certificates(raw)
        except ValueError:
            raise ConfigurationError(f"{what} ({source}): the PEM holds no certificate", key=what) from None
    else:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(raw, password)
        except ValueError:
            raise ConfigurationError(
                f"{what} ({source}): not a readable PFX/PKCS#12 file (wrong password or corrupt data)",
                key="CertificatePassword" if password else what,
            ) from None
        if key is None or cert is None:
            raise ConfigurationError(f"{what} ({source}): the PFX lacks a private key or certificate", key=what)
        certs = [cert, *extra]
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(
            f"{what} ({source}): the key must be RSA (Entra client assertions use RS256/PS256)", key=what
        )
    public_numbers = key.public_key().public_numbers()
    leaf = next(
        (
            c
            for c in certs
            if isinstance(pk := c.public_key(), rsa.RSAPublicKey) and pk.public_numbers() == public_numbers
        ),
        None,
    )
    if leaf is None:
        raise ConfigurationError(f"{what} ({source}): the private key does not match the certificate", key=what)
    not_after = leaf.not_valid_after_utc
    # x5t is a SHA-1 thumbprint by definition (RFC 7515 §4.1.7); it names the certificate, it secures nothing.
    sha1 = leaf.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303
    if not_after < datetime.datetime.now(datetime.UTC):
        logger.warning("certificate %s expired on %s; Entra will refuse it", sha1, not_after.isoformat())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return CertificateMaterial(
        private_key_pem=key_pem,
        certificate_pem=leaf.public_bytes(serialization.Encoding.PEM).decode(),
        sha1_thumbprint=sha1,
        sha256_thumbprint=leaf.fingerprint(hashes.SHA256()).hex().upper(),
    )


# -- assertions ---------------------------------------------------------------------------------------------


def _clean_assertion(raw: Any, what: str) -> str:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigurationError(f"{what} is not ASCII text", key=what) from None
    if not isinstance(raw, str):
        raise ConfigurationError(f"{what} must be a string, got {type(raw).__name__}", key=what)
    value: str = raw.strip()
    if not value:
        raise ConfigurationError(f"{what} is empty", key=what)
    if len(value) > _MAX_ASSERTION_BYTES:
        raise ConfigurationError(f"{what} is larger than {_MAX_ASSERTION_BYTES} bytes", key=what)
    return value


class FileAssertion:
    """Reads a federated token file (workload identity); re-reads it only when mtime, size or inode change."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._value: str | None = None

    def check(self) -> None:
        self._read()

    def __call__(self, context: dict[str, Any] | None = None) -> str:
        return self._read()

    def _read(self) -> str:
        what = "SignedAssertionFilePath"
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise ConfigurationError(f"{what} {self.path!r} does not exist", key=what) from None
        except OSError as exc:
            raise ConfigurationError(
                f"{what} {self.path!r} cannot be read ({exc.strerror or type(exc).__name__})", key=what
            ) from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if self._stamp == stamp and self._value is not None:
                return self._value
        raw = _read_bytes(self.path, what, _MAX_ASSERTION_BYTES + 1024)  # room for surrounding whitespace
        value = _clean_assertion(raw, what)
        with self._lock:
            self._stamp, self._value = stamp, value
        logger.debug("read federated token file %s (%d bytes)", self.path, len(value))
        return value


class CallbackAssertion:
    """Calls the user's function, with MSAL's context dict when it takes a (required) positional parameter."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._wants_context = _takes_one_argument(fn)

    def __call__(self, context: dict[str, Any]) -> str:
        value = self._fn(dict(context)) if self._wants_context else self._fn()
        return _clean_assertion(value, "AssertionCallback result")


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values()):
        return True
    return bool(positional) and positional[0].default is inspect.Parameter.empty


class ManagedIdentitySource:
    """A managed identity's token for the token-exchange audience, used as client assertion (spec §2.2)."""

    def __init__(self, cred: ManagedIdentityAssertion, http: MsalHttpClient, clock: Clock) -> None:
        self._cred = cred
        self._http = http
        self._clock = clock
        self._lock = threading.Lock()
        self._client: Any = None

    def _mi_client(self) -> Any:
        with self._lock:
            if self._client is None:
                import msal

                from ._msal_http import AppTokenCache, NoThrottleHttpCache

                identity = (
                    msal.UserAssignedManagedIdentity(client_id=self._cred.client_id)
                    if self._cred.client_id
                    else msal.SystemAssignedManagedIdentity()
                )
                self._client = msal.ManagedIdentityClient(
                    identity,
                    http_client=self._http,
                    token_cache=AppTokenCache(self._clock, max_access_tokens=16),
                    http_cache=NoThrottleHttpCache(),
                )
            return self._client

    def __call__(self, context: dict[str, Any] | None = None) -> str:
        result = self._mi_client().acquire_token_for_client(resource=self._cred.audience)
        token = result.get("access_token") if isinstance(result, dict) else None
        if isinstance(token, str) and token:
            return token
        error = result.get("error") if isinstance(result, dict) else None
        description = result.get("error_description") if isinstance(result, dict) else None
        exchange = self._http.last_exchange()
        status = exchange.status if exchange is not None and exchange.status >= 400 else 502
        logger.warning("managed identity token refused: error=%s http_status=%s", error, status)
        raise TokenAcquisitionError(
            "The managed identity could not get a token for the client assertion"
            + (f": {str(description).splitlines()[0][:200]}" if description else ""),
            error=str(error) if error else "managed_identity_error",
            http_status=status,
            status_code=503,
        )


# -- loading ---------------------------------------------------------------------------------------------


def load_credential(
    cred: Credential,
    *,
    index: int,
    send_x5c: bool,
    mi_http: Callable[[], MsalHttpClient],
    clock: Clock,
) -> LoadedCredential:
    """One credential, ready for MSAL. Raises ``ConfigurationError`` when it cannot be loaded."""
    value: str | dict[str, Any]
    if isinstance(cred, ClientSecret):
        kind, label, value = "secret", "ClientSecret", cred.value
    elif isinstance(cred, CertificateCredential):
        material = load_certificate(cred)
        value = {"private_key": material.private_key_pem}
        if cred.send_x5c or send_x5c:
            value["public_certificate"] = material.certificate_pem
        else:
            value["thumbprint"] = material.sha1_thumbprint
        kind, label = "certificate", f"Certificate x5t={material.sha1_thumbprint}"
    elif isinstance(cred, SignedAssertionFile):
        reader = FileAssertion(cred.resolve_path())
        reader.check()
        kind, label, value = "signed_assertion_file", f"SignedAssertionFile {reader.path}", {"client_assertion": reader}
    elif isinstance(cred, ManagedIdentityAssertion):
        who = f"user-assigned {cred.client_id}" if cred.client_id else "system-assigned"
        source = ManagedIdentitySource(cred, mi_http(), clock)
        kind, label, value = "managed_identity", f"ManagedIdentity {who}", {"client_assertion": source}
    elif isinstance(cred, AssertionCallback):
        kind, label, value = "assertion_callback", "AssertionCallback", {"client_assertion": CallbackAssertion(cred.fn)}
    else:
        raise ConfigurationError(f"unsupported credential type {type(cred).__name__}", key="credentials")
    return LoadedCredential(index=index, kind=kind, label=f"#{index} {label}", value=value)


class CredentialChain:
    """The configured credentials, tried in order (spec §2.2): the first that loads is current; after Entra
    rejects it, :meth:`advance` moves to the next one that loads.

    ::

        chain = CredentialChain(config.credentials, send_x5c=False, mi_http=lambda: adapter, clock=clock)
        cred = chain.current()
    """

    def __init__(
        self,
        credentials: Sequence[Credential],
        *,
        send_x5c: bool,
        mi_http: Callable[[], MsalHttpClient],
        clock: Clock,
    ) -> None:
        self._credentials = tuple(credentials)
        self._send_x5c = send_x5c
        self._mi_http = mi_http
        self._clock = clock
        self._lock = threading.Lock()
        self._current: LoadedCredential | None = None

    def current(self) -> LoadedCredential:
        with self._lock:
            if self._current is None:
                self._current = self._load_from(0)
            return self._current

    def advance(self, failed: LoadedCredential) -> LoadedCredential | None:
        """Move past ``failed`` to the next credential that loads; ``None`` when there is none (then
        ``failed`` stays current). Idempotent when several threads report the same failure."""
        with self._lock:
            if self._current is not None and self._current.index != failed.index:
                return self._current
            try:
                nxt = self._load_from(failed.index + 1)
            except ConfigurationError:
                return None
            logger.warning("client credential %s was refused by Entra; using %s", failed.label, nxt.label)
            self._current = nxt
            return nxt

    def _load_from(self, start: int) -> LoadedCredential:
        if not self._credentials:
            raise ConfigurationError(
                "no client credentials configured (AzureAd__ClientCredentials__0__SourceType); "
                "token acquisition needs a secret, a certificate or a signed assertion",
                key="credentials",
            )
        problems: list[str] = []
        for index in range(start, len(self._credentials)):
            try:
                loaded = load_credential(
                    self._credentials[index],
                    index=index,
                    send_x5c=self._send_x5c,
                    mi_http=self._mi_http,
                    clock=self._clock,
                )
            except ConfigurationError as exc:
                logger.warning("client credential #%d could not be loaded: %s", index, exc)
                problems.append(f"#{index}: {exc}")
                continue
            logger.debug("using client credential %s", loaded.label)
            return loaded
        raise ConfigurationError(
            "no client credential could be loaded: " + "; ".join(problems or ["none left to try"]),
            key="credentials",
        )
