"""``entra-mw emulator``: FakeEntra over HTTPS on loopback, for apps in any language during local development.

The emulator's directory is derived from a seed (default ``entra-mw``): tenant, app ids, user ids and secrets are
the same on every start with the same seed, and its TLS CA and token-signing key are kept in the user's cache
directory (random, owner-only), so an app configured once, and the tokens it was given, keep working across
restarts. The settings an app needs are written to a file (owner-only, never
through a symlink) that ``entra-mw token`` also reads. Each token or metadata request is logged as one line
(grant, client, user, scopes, result), never with a token, an assertion or a secret.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import errno
import hashlib
import json
import os
import shlex
import signal
import ssl
import stat
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import httpx2

from ._term import Palette
from ._tokenview import decode_token

if TYPE_CHECKING:
    from .testing import FakeEntra
    from .testing._registry import AgentIdentity, AgentUser, App, Tenant, User

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_SEED",
    "Directory",
    "EmulatorError",
    "build_directory",
    "cache_dir",
    "default_env_file",
    "read_settings",
    "run_emulator",
]

DEFAULT_SEED: Final = "entra-mw"
DEFAULT_PORT: Final = 44321
USER_PASSWORD: Final = "P@ssw0rd!"
_SETTINGS_MAX_BYTES: Final = 64 * 1024
_O_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK: Final[int] = getattr(os, "O_NONBLOCK", 0)


class EmulatorError(Exception):
    """An expected failure (port in use, unwritable file, no emulator running): one line for the user."""


# -- where things live -----------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/entra-mw`` (default ``~/.cache/entra-mw``)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "entra-mw"


def default_env_file() -> Path:
    """Where the emulator writes its settings and ``entra-mw token`` looks for them by default."""
    return cache_dir() / "emulator.env"


def _private_dir(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise EmulatorError(f"cannot create the directory {path}: {exc.strerror or exc}") from None
    return path


def _write_private(path: Path, data: bytes, *, what: str) -> None:
    """Write ``data`` to ``path`` with mode 0600, refusing symlinks and anything that is not a regular file."""
    # O_NOFOLLOW: never write through a symlink planted at the path; O_NONBLOCK: a FIFO there fails, not hangs.
    flags = os.O_WRONLY | os.O_CREAT | _O_NOFOLLOW | _O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EmulatorError(f"refusing to write the {what} through the symlink {path}") from None
        if exc.errno == errno.ENXIO:
            raise EmulatorError(f"refusing to write the {what} to {path}: not a regular file") from None
        raise EmulatorError(f"cannot write the {what} to {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise EmulatorError(f"refusing to write the {what} to {path}: not a regular file")
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the mode argument of open applies only when the file is created
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise EmulatorError(f"cannot write the {what} to {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _read_private(path: Path, *, limit: int = _SETTINGS_MAX_BYTES, follow: bool = False) -> bytes:
    """At most ``limit`` bytes of a regular file (never a FIFO or a device), through a symlink only if ``follow``."""
    flags = os.O_RDONLY | (0 if follow else _O_NOFOLLOW) | _O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, "file too large")
    return data


# -- the seeded directory ----------------------------------------------------------------------------------------


def _digest(seed: str, name: str) -> bytes:
    return hashlib.sha256(f"entra-mw emulator\0{seed}\0{name}".encode()).digest()


def _derived_id(seed: str, name: str) -> str:
    return str(uuid.UUID(bytes=_digest(seed, name)[:16], version=4))


def _derived_secret(seed: str, name: str) -> str:
    text = base64.urlsafe_b64encode(_digest(seed, f"secret:{name}")).decode("ascii").rstrip("=")
    return f"{text[:3]}8Q~{text[3:40]}"  # shaped like an Entra client secret


@dataclass(frozen=True, slots=True, kw_only=True)
class Directory:
    """The emulator's directory: a protected API, a client app calling it, an agent blueprint and its agent."""

    seed: str
    tenant: Tenant
    api: App
    api_secret: str = field(repr=False)
    client: App
    client_secret: str = field(repr=False)
    blueprint: App
    blueprint_secret: str = field(repr=False)
    agent: AgentIdentity
    agent_user: AgentUser
    users: tuple[User, ...]
    password: str = field(repr=False)
    web: App
    identity: App


def _pin_object_id(fake: FakeEntra, record: User | AgentUser, object_id: str) -> None:
    # FakeEntra picks random object ids; the emulator keeps them stable so that an app's data keyed by oid survives
    # a restart. The registry is keyed by object id, so re-key it.
    with fake.lock:
        registry = fake.registry
        table: dict[str, Any] = registry.users if record.object_id in registry.users else registry.agent_users
        table.pop(record.object_id, None)
        record.object_id = object_id
        table[object_id] = record


def build_directory(fake: FakeEntra, seed: str = DEFAULT_SEED) -> Directory:
    """Register the emulator's directory in ``fake``; the same ``seed`` always gives the same ids and secrets.

    The weather API exposes the scopes ``Weather.Read`` and ``Weather.Write`` and the app roles
    ``Weather.Read.All`` and ``Weather.Write.All``. The client app is consented to both scopes and granted only
    ``Weather.Read.All``; users alice and bob can sign in with the test-only password grant.
    """
    tenant = fake.add_tenant(
        tenant_id=_derived_id(seed, "tenant"), domain="contoso.onmicrosoft.com", display_name="Contoso"
    )
    api = fake.add_app(
        tenant,
        display_name="weather-api",
        app_id=_derived_id(seed, "api"),
        scopes=("Weather.Read", "Weather.Write"),
        app_roles=("Weather.Read.All", "Weather.Write.All"),
    )
    api_secret = fake.add_secret(api, _derived_secret(seed, "api"))
    client = fake.add_app(tenant, display_name="weather-client", app_id=_derived_id(seed, "client"))
    client_secret = fake.add_secret(client, _derived_secret(seed, "client"))
    fake.grant_consent(client, api, api.scopes)
    fake.grant_app_roles(client, api, ["Weather.Read.All"])
    users = []
    for name, display in (("alice", "Alice Example"), ("bob", "Bob Example")):
        user = fake.add_user(tenant, upn=f"{name}@{tenant.domain}", password=USER_PASSWORD, display_name=display)
        _pin_object_id(fake, user, _derived_id(seed, f"user:{name}"))
        users.append(user)
    blueprint = fake.add_blueprint(
        tenant, display_name="weather-agent-blueprint", app_id=_derived_id(seed, "blueprint"), scopes=("access_agent",)
    )
    blueprint_secret = fake.add_secret(blueprint, _derived_secret(seed, "blueprint"))
    fake.grant_consent(blueprint, api, api.scopes)
    fake.grant_app_roles(blueprint, api, ["Weather.Read.All"])
    fake.grant_consent(client, blueprint, blueprint.scopes)
    agent = fake.add_agent_identity(blueprint, display_name="weather-agent", app_id=_derived_id(seed, "agent"))
    with fake.lock:
        agent.sp_object_id = _derived_id(seed, "agent-sp")
    fake.grant_consent(agent, api, api.scopes)
    fake.grant_app_roles(agent, api, ["Weather.Read.All"])
    agent_user = fake.add_agent_user(agent, upn=f"weather-agent@{tenant.domain}")
    _pin_object_id(fake, agent_user, _derived_id(seed, "agent-user"))
    # Web sign-in: a web app that signs users in on a laptop (any loopback port, callback /auth/callback) and
    # authenticates with a managed identity used as a federated credential, so it needs no secret at all.
    web = fake.add_app(
        tenant,
        display_name="weather-web",
        app_id=_derived_id(seed, "web"),
        redirect_uris=(*_WEB_REDIRECTS, *(u.rsplit("/auth/callback", 1)[0] + "/" for u in _WEB_REDIRECTS)),
    )
    identity = fake.add_managed_identity(tenant, display_name="weather-web-identity", client_id=_derived_id(seed, "mi"))
    fake.trust_managed_identity(web, identity)
    fake.identity_header = _derived_secret(seed, "identity-header")
    return Directory(
        seed=seed,
        tenant=tenant,
        api=api,
        api_secret=api_secret,
        client=client,
        client_secret=client_secret,
        blueprint=blueprint,
        blueprint_secret=blueprint_secret,
        agent=agent,
        agent_user=agent_user,
        users=tuple(users),
        password=USER_PASSWORD,
        web=web,
        identity=identity,
    )


# The web app's reply URLs: loopback ones match any port, so a laptop's dev server on any port works.
_WEB_REDIRECTS: Final = ("http://localhost/auth/callback", "http://127.0.0.1/auth/callback")


# -- TLS: a CA kept across restarts, and a bundle with the system CAs -------------------------------------------------


def _system_ca_pem() -> bytes:
    """The system's trusted CAs as PEM (the OpenSSL default file, or certifi's), ignoring ``SSL_CERT_FILE``."""
    paths = ssl.get_default_verify_paths()
    candidates = [paths.openssl_cafile, paths.cafile or "", "/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            with contextlib.suppress(OSError):
                return Path(candidate).read_bytes()
    with contextlib.suppress(ImportError, OSError):
        import certifi

        return Path(certifi.where()).read_bytes()
    return b""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tls:
    ca_file: Path
    bundle_file: Path
    context: ssl.SSLContext


def _load_or_make_ca(folder: Path) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from .testing._keys import private_key_pem, self_signed_cert

    key_path, cert_path = folder / "ca-key.pem", folder / "ca.pem"
    with contextlib.suppress(OSError, ValueError):
        key = serialization.load_pem_private_key(_read_private(key_path), password=None)
        cert = x509.load_pem_x509_certificate(_read_private(cert_path))
        fresh_enough = cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
        if isinstance(key, ec.EllipticCurvePrivateKey) and fresh_enough:
            return key, cert
    # The CA's key is random (never derived from the seed, which may be public) and stays in the private cache.
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_cert(key, "entra-mw emulator local CA", days=825, ca=True)
    _write_private(key_path, private_key_pem(key), what="CA key")
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), what="CA certificate")
    return key, cert


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the folder's lock file, so two emulators starting together make one CA and one signing key."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the last writer wins
        yield
        return
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | _O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _tls(folder: Path) -> _Tls:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from .testing._keys import private_key_pem

    ca_key, ca_cert = _load_or_make_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_cert, server_key = folder / "server.pem", folder / "server-key.pem"
    _write_private(server_cert, cert.public_bytes(serialization.Encoding.PEM), what="server certificate")
    _write_private(server_key, private_key_pem(key), what="server key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server_cert, server_key)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    bundle = folder / "ca-bundle.pem"
    # The app's whole process trusts this bundle (SSL_CERT_FILE), so it must keep trusting the real world too.
    _write_private(bundle, ca_pem + b"\n" + _system_ca_pem(), what="CA bundle")
    return _Tls(ca_file=folder / "ca.pem", bundle_file=bundle, context=context)


def _signing_key(folder: Path) -> Any:
    """The emulator's token-signing key, kept with the CA, so tokens and cached keys outlive a restart."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from .testing._keys import SigningKey, fresh_rsa_key, private_key_pem, self_signed_cert, thumbprints

    key_path, cert_path = folder / "signing-key.pem", folder / "signing-cert.pem"
    key: Any = None
    cert: Any = None
    with contextlib.suppress(OSError, ValueError):
        key = serialization.load_pem_private_key(_read_private(key_path), password=None)
        cert = x509.load_pem_x509_certificate(_read_private(cert_path))
        if not isinstance(key, rsa.RSAPrivateKey) or cert.public_key() != key.public_key():
            key = None
    if key is None or cert is None:
        key = fresh_rsa_key()
        cert = self_signed_cert(key, "accounts.accesscontrol.windows.net", days=730)
        _write_private(key_path, private_key_pem(key), what="signing key")
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), what="signing certificate")
    x5t, _ = thumbprints(cert)  # Entra's kid is the certificate's x5t
    return SigningKey(private_key=key, certificate=cert, kid=x5t, x5t=x5t)


# -- the request log -----------------------------------------------------------------------------------------------


def _claims_of(assertion: str) -> dict[str, Any]:
    try:
        return decode_token(assertion)[1]
    except ValueError:
        return {}


class _RequestLog:
    """One line per request: what was asked for and how it ended. Tokens, assertions and secrets never appear."""

    def __init__(self, fake: FakeEntra, out: TextIO, palette: Palette) -> None:
        self._fake = fake
        self._out = out
        self._palette = palette
        self._lock = threading.Lock()

    def _name(self, client_id: str) -> str:
        if not client_id:
            return "-"
        found = self._fake.registry.app(client_id) or self._fake.registry.agent(client_id)
        return found.display_name if found is not None else f"unknown ({client_id})"

    def line(self, endpoint: str, request: httpx2.Request, response: httpx2.Response) -> str:
        if endpoint.startswith("token") or request.url.path.endswith("/token"):
            form = dict(urllib.parse.parse_qsl(request.content.decode("utf-8", "replace")))
            grant = form.get("grant_type", "-").rsplit(":", 1)[-1]
            client = self._name(form.get("client_id", ""))
            user = form.get("username") or form.get("user_id") or ""
            if not user and form.get("assertion"):
                claims = _claims_of(form["assertion"])
                user = str(claims.get("preferred_username") or claims.get("upn") or claims.get("oid") or "")
            parts = [f"token grant={grant}", f"client={client}", f"user={user or '-'}"]
            if form.get("fmi_path"):
                parts.append(f"agent={self._name(form['fmi_path'])}")
            parts.append(f"scopes={form.get('scope', '-')}")
        else:
            parts = [endpoint.replace("_", "-"), request.method, request.url.path]
        return " ".join(parts) + " → " + self._result(response)

    def _result(self, response: httpx2.Response) -> str:
        if response.status_code < 400:
            return self._palette.good(str(response.status_code))
        detail = ""
        with contextlib.suppress(ValueError, UnicodeError):
            body = json.loads(response.content)
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                codes = body.get("error_codes")
                code = f" AADSTS{codes[0]}" if isinstance(codes, list) and codes else ""
                detail = f" {body['error']}{code}"
        return self._palette.bad(f"{response.status_code}{detail}")

    def write(self, endpoint: str, request: httpx2.Request, response: httpx2.Response) -> None:
        stamp = time.strftime("%H:%M:%S")
        text = self.line(endpoint, request, response)
        with self._lock:
            self._out.write(f"{self._palette.dim(stamp)} {text}\n")
            self._out.flush()


def _emulated_fake(log_out: TextIO, palette: Palette, signing_key: Any) -> FakeEntra:
    from .testing import FakeEntra

    class _EmulatedEntra(FakeEntra):
        """FakeEntra whose served requests are logged as they are answered, signing with a kept key."""

        log: _RequestLog

        def keep_signing_key(self, key: Any) -> None:
            # FakeEntra makes a new signing key per instance; the emulator signs with the one it keeps instead.
            with self.lock:
                self._keys = [key]
                self._current = key
                self._known = {key.kid: key}

        def _plan(self, request: httpx2.Request) -> Any:
            plan = super()._plan(request)
            respond = plan.respond

            def logged() -> httpx2.Response:
                response: httpx2.Response = respond()
                response.read()
                self.log.write(plan.endpoint, request, response)
                return response

            return replace(plan, respond=logged)

    fake = _EmulatedEntra()
    fake.log = _RequestLog(fake, log_out, palette)
    fake.keep_signing_key(signing_key)
    return fake


# -- settings ---------------------------------------------------------------------------------------------------------


def _value(text: str) -> str:
    return text if text and all(c.isalnum() or c in "-_.:/@~+=%,^" for c in text) else shlex.quote(text)


def settings_text(
    directory: Directory, *, base_url: str, ca_bundle: Path, ca_file: Path, identity_header: str = ""
) -> str:
    d = directory
    users = ",".join(u.upn for u in d.users)

    def kv(name: str, value: str | Path) -> str:
        return f"{name}={_value(str(value))}"

    lines = [
        "# entra-mw emulator: a local, fake Microsoft Entra ID. These ids and secrets exist only in this emulator.",
        f"# Seed {d.seed!r}: restarting with the same seed gives the same tenant, ids, secrets and CA.",
        "# Load into a shell with:  set -a; . THIS_FILE; set +a   (or docker run --env-file THIS_FILE ...)",
        "# Get a token with:        entra-mw token --user alice --scope Weather.Read",
        "",
        "# -- Where Entra is, and what to trust ----------------------------------------------------------------",
        "# The bundle holds the emulator's CA and the system CAs, so other HTTPS calls of the app keep working.",
        kv("AzureAd__Instance", base_url),
        kv("AzureAd__TenantId", d.tenant.tenant_id),
        kv("SSL_CERT_FILE", ca_bundle),
        kv("REQUESTS_CA_BUNDLE", ca_bundle),
        kv("ENTRA_EMULATOR_CA_FILE", ca_file),
        "",
        "# -- The protected API: your app, when it validates tokens (weather-api) ---------------------------------",
        "# Tokens from `entra-mw token` are issued for this app id. Scopes: Weather.Read, Weather.Write;",
        "# app roles: Weather.Read.All, Weather.Write.All. The secret lets it call downstream APIs (On-Behalf-Of).",
        kv("AzureAd__ClientId", d.api.app_id),
        "AzureAd__ClientCredentials__0__SourceType=ClientSecret",
        kv("AzureAd__ClientCredentials__0__ClientSecret", d.api_secret),
        "",
        "# -- The calling client (weather-client): a front end or script that calls the API ----------------------",
        "# Consented to both scopes; granted the app role Weather.Read.All. Test users sign in with the password",
        "# below (the emulator's test-only password grant). To run a client app against the emulator, give it",
        "# AzureAd__ClientId=$ENTRA_EMULATOR_CLIENT_ID and the secret below.",
        kv("ENTRA_EMULATOR_CLIENT_ID", d.client.app_id),
        kv("ENTRA_EMULATOR_CLIENT_SECRET", d.client_secret),
        kv("ENTRA_EMULATOR_USERS", users),  # comma-separated, so that no quoting is needed
        kv("ENTRA_EMULATOR_USER_PASSWORD", d.password),
        "",
        "# -- The agent blueprint (weather-agent-blueprint): an app that acts as agent identities ------------------",
        "# To run an agent against the emulator, give it AzureAd__ClientId=$ENTRA_EMULATOR_BLUEPRINT_ID and",
        "# AzureAd__ClientCredentials__0__ClientSecret=$ENTRA_EMULATOR_BLUEPRINT_SECRET; its agent identity and",
        "# the agent's user account are below. Users sign in to it with the scope api://<blueprint id>/access_agent.",
        kv("ENTRA_EMULATOR_BLUEPRINT_ID", d.blueprint.app_id),
        kv("ENTRA_EMULATOR_BLUEPRINT_SECRET", d.blueprint_secret),
        kv("ENTRA_EMULATOR_AGENT_ID", d.agent.app_id),
        kv("ENTRA_EMULATOR_AGENT_USER", d.agent_user.upn),
        "",
        "# -- Web sign-in (weather-web): a web app that signs users in and calls the API for them ---------------",
        "# Reply URL http://localhost:<any port>/auth/callback. It has no secret: it authenticates with the managed",
        "# identity below used as a federated credential (ManagedIdentityAssertion), reached the way App Service",
        "# and Container Apps expose it (IDENTITY_ENDPOINT + IDENTITY_HEADER). Give the web app",
        "# AzureAd__ClientId=$ENTRA_EMULATOR_WEB_CLIENT_ID, SourceType=SignedAssertionFromManagedIdentity and",
        "# ManagedIdentityClientId=$ENTRA_EMULATOR_MANAGED_IDENTITY_CLIENT_ID.",
        "# Note: a shell that loads this file points every managed-identity client (MSAL, azure-identity) at the",
        "# emulator through the two variables below; unset them in shells that must reach real Azure.",
        kv("ENTRA_EMULATOR_WEB_CLIENT_ID", d.web.app_id),
        kv("ENTRA_EMULATOR_MANAGED_IDENTITY_CLIENT_ID", d.identity.app_id),
        kv("ENTRA_EMULATOR_SIGN_IN_URL", f"{base_url}{d.tenant.tenant_id}/oauth2/v2.0/authorize"),
        kv("IDENTITY_ENDPOINT", f"{base_url}msi/token"),
        kv("IDENTITY_HEADER", identity_header),
    ]
    return "\n".join(lines) + "\n"


def read_settings(path: Path) -> dict[str, str]:
    """Parse an emulator settings file (``NAME=value`` lines, ``#`` comments, shell quoting)."""
    try:
        raw = _read_private(path, follow=True)  # a settings file the user linked elsewhere is fine to read
    except FileNotFoundError:
        raise EmulatorError(
            f"no emulator settings at {path}: start one with `entra-mw emulator` (or pass --env-file)"
        ) from None
    except OSError as exc:
        raise EmulatorError(f"cannot read the emulator settings {path}: {exc.strerror or exc}") from None
    values: dict[str, str] = {}
    for raw_line in raw.decode("utf-8", "replace").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value]
        values[name.strip()] = " ".join(words)
    return values


# -- running ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _serving(fake: FakeEntra, context: ssl.SSLContext, port: int) -> Iterator[int]:
    from .testing._serve import _Server

    try:
        server = _Server(fake, context, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise EmulatorError(
                f"port {port} is in use (another emulator?); choose one with --port, or --port 0 for a free one"
            ) from None
        if exc.errno == errno.EACCES:
            raise EmulatorError(f"port {port} needs privileges; choose a port above 1023 with --port") from None
        raise EmulatorError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="entra-mw-emulator", daemon=True
    )
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.drop_connections()
        server.server_close()
        thread.join(timeout=5)


def run_emulator(
    *,
    port: int = DEFAULT_PORT,
    env_file: str | Path | None = None,
    seed: str = DEFAULT_SEED,
    out: TextIO,
    stop: threading.Event | None = None,
    palette: Palette | None = None,
) -> int:
    """Serve the seeded directory on ``127.0.0.1:port`` until interrupted (or ``stop`` is set).

    Raises :class:`EmulatorError` for expected failures (bad port, port in use, unwritable settings file).
    """
    if not 0 <= port <= 65535:
        raise EmulatorError(f"--port must be between 0 and 65535, not {port}")
    if not seed or not seed.isprintable():
        raise EmulatorError("--seed must be a non-empty printable string")
    paint = palette or Palette(out)
    path = Path(env_file) if env_file is not None else default_env_file()
    if env_file is None:
        _private_dir(path.parent)
    folder = _private_dir(cache_dir() / "emulator" / hashlib.sha256(seed.encode()).hexdigest()[:16])
    try:
        with _locked(folder):
            tls = _tls(folder)
            signing_key = _signing_key(folder)
    except OSError as exc:
        raise EmulatorError(f"cannot use the emulator's cache directory {folder}: {exc.strerror or exc}") from None
    fake = _emulated_fake(out, paint, signing_key)
    directory = build_directory(fake, seed)
    with _serving(fake, tls.context, port) as bound:
        base_url = f"https://127.0.0.1:{bound}/"
        text = settings_text(
            directory,
            base_url=base_url,
            ca_bundle=tls.bundle_file,
            ca_file=tls.ca_file,
            identity_header=fake.identity_header,
        )
        _write_private(path, text.encode("utf-8"), what="settings file")
        shown = path.resolve()
        out.write(paint.bold(f"entra-mw emulator: a local Entra ID at {base_url}") + "\n")
        out.write(f"  tenant          {directory.tenant.tenant_id} ({directory.tenant.domain})\n")
        out.write(f"  protected API   {directory.api.app_id} (weather-api: Weather.Read, Weather.Write)\n")
        out.write(f"  calling client  {directory.client.app_id} (weather-client)\n")
        out.write(f"  agent blueprint {directory.blueprint.app_id}, agent {directory.agent.app_id}\n")
        out.write(f"  test users      {', '.join(u.upn for u in directory.users)} (password {directory.password})\n")
        out.write(f"  web sign-in     {base_url}{directory.tenant.tenant_id}/oauth2/v2.0/authorize\n")
        out.write(
            f"                  web app {directory.web.app_id} (reply URL http://localhost:<port>/auth/callback),"
            f" managed identity {directory.identity.app_id}\n"
        )
        out.write(f"Settings (with the emulator's secrets) in {shown}\n")
        out.write(f"  load them:      set -a; . {shlex.quote(str(shown))}; set +a\n")
        out.write("  get a token:    entra-mw token --user alice --scope Weather.Read\n")
        out.write("Requests are logged below. Press Ctrl+C to stop.\n")
        out.flush()
        event = stop or threading.Event()
        previous = None
        if stop is None and threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
        try:
            while not event.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    out.write("entra-mw emulator stopped.\n")
    return 0
