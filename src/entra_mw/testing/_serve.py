"""FakeEntra over real HTTPS on loopback: a threaded stdlib server with a throwaway CA.

Each request becomes an ``httpx2.Request`` and runs through the same plan as the in-process transport; an
outage fault closes the connection without an answer. The CA certificate is written to a private temporary
directory; clients trust it with ``httpx2.Client(verify=served.ssl_context())`` (httpx2 deprecates
``verify=<path>``). ``ca_bundle`` is the same CA appended to the system's trusted roots, for variables that
*replace* a client's trust store (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``) rather than add to it.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import socket
import ssl
import tempfile
import threading
import weakref
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import httpx2

from ._keys import tls_material
from ._managed_identity import MANAGED_IDENTITY_PATH

if TYPE_CHECKING:
    from ._fake import FakeEntra

__all__ = ["ServedFakeEntra"]

MAX_BODY: Final = 1 << 20  # token requests are small; anything bigger is refused with 413
_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, fake: FakeEntra, context: ssl.SSLContext, port: int = 0) -> None:
        self.fake = fake
        self.context = context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        # The TLS handshake runs in the connection's own thread (first read), so a slow or broken client never
        # stalls the accept loop.
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.connections_lock:
            self.connections.add(tls)
        return tls, addr

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up, fail the handshake or time out are normal here; stay quiet.
        return

    def drop_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # never log request lines: query strings may carry secrets

    def _answer(self) -> None:
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self._plain(411, b"Content-Length required")
            return
        try:
            length = int(length_header) if length_header else 0
        except ValueError:
            self._plain(400, b"bad Content-Length")
            return
        if length < 0 or length > MAX_BODY:
            self._plain(413, b"request body too large")
            return
        body = self.rfile.read(length) if length else b""
        host = f"127.0.0.1:{self.server.server_address[1]}"
        request = httpx2.Request(
            self.command,
            f"https://{host}{self.path}",
            headers=[(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP],
            content=body,
        )
        request.read()
        plan = self.server.fake._plan(request)
        if plan.latency > 0:
            self.server.fake.latency_clock.sleep(plan.latency)
        if plan.outage:
            # A dropped connection, as a network outage looks to the client.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        response = plan.respond()
        content = response.read()
        self.send_response(response.status_code)
        for name, value in response.headers.multi_items():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def _plain(self, status: int, text: bytes) -> None:
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(text)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer


# Where the operating system keeps its roots when certifi is absent (Debian/Ubuntu/Alpine, Fedora/RHEL, macOS
# Homebrew, OpenSSL's compiled-in default). ``SSL_CERT_FILE`` is not consulted: it may already point at a
# FakeEntra bundle.
_SYSTEM_BUNDLES: Final = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
)


def system_ca_pem() -> bytes:
    """The trusted roots clients use by default: certifi's bundle (what ``requests`` uses), else the system's."""
    candidates: list[str] = []
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with requests, which msal requires
        pass
    else:
        candidates.append(certifi.where())
    candidates.append(ssl.get_default_verify_paths().openssl_cafile)
    candidates.extend(_SYSTEM_BUNDLES)
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file():
            data = path.read_bytes()
            if b"-----BEGIN CERTIFICATE-----" in data:
                return data
    return b""  # pragma: no cover - a machine with no trusted roots at all


def _cleanup(server: _Server, thread: threading.Thread, tmpdir: str) -> None:
    server.shutdown()
    server.drop_connections()
    server.server_close()
    thread.join(timeout=5)
    shutil.rmtree(tmpdir, ignore_errors=True)


class ServedFakeEntra:
    """A FakeEntra served over HTTPS on ``127.0.0.1`` (random free port), with a generated CA.

    Starts on construction; stops on :meth:`close`, on leaving the ``with`` block, when the FakeEntra is
    closed, or when garbage-collected.

    Example::

        with fake.serve() as served:
            with httpx2.Client(verify=served.ssl_context()) as client:
                client.get(f"{served.base_url}common/discovery/keys")
    """

    def __init__(self, fake: FakeEntra, *, port: int = 0) -> None:
        self._fake = fake
        self._as_issuer = False
        material = tls_material(("127.0.0.1", "localhost"))
        self._tmpdir = tempfile.mkdtemp(prefix="fake-entra-")
        tmp = Path(self._tmpdir)
        (tmp / "ca.pem").write_bytes(material.ca_pem)
        (tmp / "server.pem").write_bytes(material.cert_pem)
        key_path = tmp / "server-key.pem"
        key_path.touch(mode=0o600)
        key_path.write_bytes(material.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tmp / "server.pem", key_path)
        self._server = _Server(fake, context, port)
        self.port: int = self._server.server_address[1]
        self.base_url = f"https://127.0.0.1:{self.port}/"
        self.ca_file = str(tmp / "ca.pem")
        self.ca_pem = material.ca_pem
        system = system_ca_pem()
        bundle = tmp / "ca-bundle.pem"
        bundle.write_bytes(system.rstrip(b"\n") + b"\n\n# FakeEntra test CA\n" + material.ca_pem)
        self.ca_bundle = str(bundle)
        """The system's trusted roots plus this server's CA: point ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``
        here to trust FakeEntra without distrusting everything else."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-entra-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _cleanup, self._server, self._thread, self._tmpdir)

    @property
    def instance(self) -> str:
        """The authority instance to configure clients with (same as :attr:`base_url`)."""
        return self.base_url

    def authority(self, tenant: str) -> str:
        """``{base_url}{tenant}``: the authority for MSAL (``instance_discovery=False``) and azure-identity."""
        return f"{self.base_url}{tenant}"

    def issuer(self, tenant_id: str) -> str:
        """The tenant's v2 issuer as this FakeEntra states it (the served URL when served ``as_issuer``)."""
        return f"https://{self._fake.authority_host}/{tenant_id}/v2.0"

    def authorize_endpoint(self, tenant: str) -> str:
        """Where a browser starts web sign-in: ``{base_url}{tenant}/oauth2/v2.0/authorize``."""
        return f"{self.base_url}{tenant}/oauth2/v2.0/authorize"

    def logout_endpoint(self, tenant: str) -> str:
        """``{base_url}{tenant}/oauth2/v2.0/logout`` (``post_logout_redirect_uri`` must be registered)."""
        return f"{self.base_url}{tenant}/oauth2/v2.0/logout"

    @property
    def managed_identity_endpoint(self) -> str:
        """The managed-identity endpoint, for ``IDENTITY_ENDPOINT`` (App Service / Container Apps style)."""
        return f"{self.base_url}{MANAGED_IDENTITY_PATH}"

    def managed_identity_env(self) -> dict[str, str]:
        """``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` as App Service sets them: with these two variables (and
        :attr:`ca_bundle` trusted), MSAL's and azure-identity's managed-identity clients reach FakeEntra.

        Example::

            os.environ.update(served.managed_identity_env())
            os.environ["REQUESTS_CA_BUNDLE"] = served.ca_bundle
        """
        return {"IDENTITY_ENDPOINT": self.managed_identity_endpoint, "IDENTITY_HEADER": self._fake.identity_header}

    def ssl_context(self) -> ssl.SSLContext:
        """A new client ``SSLContext`` trusting this server's CA: ``httpx2.Client(verify=...)``."""
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Stop serving, drop open connections and delete the CA/key files (idempotent)."""
        self._finalizer()

    def __enter__(self) -> ServedFakeEntra:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServedFakeEntra(base_url={self.base_url!r}, closed={self.closed})"
