"""Web sign-in, framework-free: a web app signs users in with the authorization-code flow (PKCE, ``state``,
``nonce``), keeps their tokens on the server, and gets API tokens for them silently.

MSAL is the protocol engine (``initiate_auth_code_flow`` / ``acquire_token_by_auth_code_flow`` check ``state``,
the PKCE verifier and the ID token's ``nonce``); this module decides everything else, once for every framework:

- what is kept where: the browser holds only opaque random ids (a short-lived *pending* id between login and
  callback, then a *session* id); the flow, the user's claims and MSAL's token cache (with the refresh token) stay
  in a server-side :class:`SessionStore`, never in a cookie;
- the session id is new at every sign-in (no fixation) and dropped at sign-out;
- where a user may be sent back to: only a path of this app (:func:`safe_next`);
- cookie attributes: ``HttpOnly``, ``SameSite=Lax``, ``Secure`` unless the app is served on loopback.

Adapters (``entra_mw.contrib.flask`` ...) translate: read the cookie and the callback parameters, call
:class:`WebSignIn`, set cookies, redirect.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit

from ._clock import Clock, SystemClock
from .errors import EntraError

if TYPE_CHECKING:
    from ._engine import EntraAuth

__all__ = [
    "MemorySessionStore",
    "SessionStore",
    "SignInError",
    "SignInRequired",
    "SignInStart",
    "SignedIn",
    "WebSignIn",
    "cookie_attributes",
    "safe_next",
]

logger = logging.getLogger("entra_mw.signin")

#: Claims of the ID token kept for the session (what an app shows or keys on; never the whole token).
_USER_CLAIMS = ("oid", "tid", "sub", "name", "preferred_username", "email", "roles", "groups", "idp", "ver")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class SignInError(EntraError):
    """The sign-in could not be completed: Entra answered with an error, the callback did not match a sign-in
    started here (missing or expired pending id, wrong ``state``), or the code was refused. Renders as a 400
    (401 when Entra refused the user) with a description safe to show."""

    status_code = 400
    error = "sign_in_failed"

    def __init__(self, description: str, *, reason: str = "sign_in_failed", status_code: int = 400) -> None:
        super().__init__(description, reason=reason)
        self.status_code = status_code


class SignInRequired(EntraError):
    """No signed-in user, or the user's session can no longer get tokens silently (refresh token expired or
    revoked, consent withdrawn): the adapter sends the browser to sign in again."""

    status_code = 401
    error = "login_required"


class SessionStore(Protocol):
    """Where sessions live on the server. Values are opaque bytes; ``ttl`` is in seconds."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float) -> None: ...

    def delete(self, key: str) -> None: ...


class MemorySessionStore:
    """An in-process :class:`SessionStore`: bounded (least recently used go first), entries expire on the
    clock. Good for one process; several replicas need a shared store (Redis)."""

    def __init__(self, *, max_entries: int = 10_000, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._max = max_entries
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: bytes, ttl: float) -> None:
        with self._lock:
            self._data[key] = (self._clock.monotonic() + ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True)
class SignInStart:
    """Where to send the browser (``url``, the tenant's authorize endpoint) and the pending id to keep in a
    cookie until the callback."""

    url: str
    pending_id: str


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A completed sign-in: the new session id (set it as the session cookie), the user's claims and the path
    to return to."""

    session_id: str
    claims: Mapping[str, Any]
    next_path: str


def safe_next(value: object, default: str = "/") -> str:
    """``value`` when it is a path of this app (``/orders?id=1``), else ``default``. Refuses absolute and
    scheme-relative URLs (``https://evil``, ``//evil``, ``/\\evil``), control characters and anything that is
    not a string, so a ``next`` parameter can never send a user off-site."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2048:
        return default
    if value.startswith(("//", "/\\")) or "\\" in value:
        return default
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def cookie_attributes(host: str | None, *, max_age: int | None = None) -> dict[str, Any]:
    """The attributes of every cookie web sign-in sets, given the request's host (``Host`` header, with or
    without a port): ``HttpOnly``, ``SameSite=Lax``, ``Path=/`` and ``Secure`` unless the host is loopback (a
    laptop on ``http://localhost``)."""
    name = (host or "").strip().lower()
    if name.startswith("["):
        name = name.split("]", 1)[0] + "]"
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return {
        "httponly": True,
        "samesite": "Lax",
        "secure": name not in _LOOPBACK,
        "path": "/",
        "max_age": max_age,
    }


class WebSignIn:
    """Authorization code + PKCE for a web app, on the engine's configuration and credentials (a secret, a
    certificate, or a managed identity used as a federated credential: no secret at all).

    ::

        signin = WebSignIn(auth, scopes=["api://weather/Weather.Read"])
        start = signin.start(redirect_uri="http://localhost:5000/auth/callback", next_path="/forecast")
        # browser → start.url; keep start.pending_id in a cookie
        done = signin.finish(pending_id, request_params)      # at the callback
        header = signin.authorization_header(done.session_id, scopes=["api://weather/Weather.Read"])

    ``scopes``: delegated scopes to ask consent for at sign-in (``openid profile offline_access`` are always
    added by MSAL). ``store``: a :class:`SessionStore` (in memory by default). ``response_mode``: ``"query"``
    (default) or ``"form_post"``.
    """

    def __init__(
        self,
        auth: EntraAuth,
        *,
        scopes: Sequence[str] = (),
        store: SessionStore | None = None,
        response_mode: str = "query",
        session_ttl: float = 8 * 3600.0,
        pending_ttl: float = 600.0,
    ) -> None:
        if response_mode not in ("query", "form_post"):
            raise ValueError("response_mode must be 'query' or 'form_post'")
        self._auth = auth
        self.scopes = tuple(scopes)
        self.store: SessionStore = store if store is not None else MemorySessionStore(clock=auth.clock)
        self.response_mode = response_mode
        self.session_ttl = session_ttl
        self.pending_ttl = pending_ttl
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- the flow ----------------------------------------------------------------------------------------

    def start(
        self,
        *,
        redirect_uri: str,
        next_path: object = None,
        prompt: str | None = None,
        login_hint: str | None = None,
    ) -> SignInStart:
        """Begin a sign-in: the authorize URL (with ``state``, ``nonce`` and a PKCE S256 challenge) and the
        pending id that binds the callback to this browser."""
        app = self._app(None)
        flow = app.initiate_auth_code_flow(
            list(self.scopes),
            redirect_uri=redirect_uri,
            prompt=prompt,
            login_hint=login_hint,
            response_mode=self.response_mode if self.response_mode != "query" else None,
        )
        pending_id = secrets.token_urlsafe(32)
        record = {"flow": flow, "next": safe_next(next_path)}
        self.store.set(_pending_key(pending_id), json.dumps(record).encode(), self.pending_ttl)
        return SignInStart(url=str(flow["auth_uri"]), pending_id=pending_id)

    def finish(self, pending_id: str | None, params: Mapping[str, str]) -> SignedIn:
        """Complete a sign-in at the callback with the parameters Entra sent (query or form). The pending
        record is single-use. Raises :class:`SignInError`."""
        if not pending_id or not isinstance(pending_id, str):
            raise SignInError("No sign-in was started from this browser, or it expired.", reason="no_pending")
        key = _pending_key(pending_id)
        raw = self.store.get(key)
        self.store.delete(key)
        if raw is None:
            raise SignInError("No sign-in was started from this browser, or it expired.", reason="no_pending")
        record = json.loads(raw)
        flow: dict[str, Any] = record["flow"]
        answer = {str(k): str(v) for k, v in params.items()}
        if answer.get("state") != flow.get("state"):
            raise SignInError("The sign-in response does not match the sign-in that was started.", reason="state")
        if "error" in answer:
            logger.info("sign-in refused by the identity provider error=%s", answer.get("error"))
            raise SignInError(
                _first_line(answer.get("error_description") or answer["error"]), reason="idp_error", status_code=401
            )
        cache = _new_cache()
        app = self._app(cache)
        try:
            result = app.acquire_token_by_auth_code_flow(flow, answer, scopes=list(self.scopes) or None)
        except ValueError as exc:
            # MSAL raises ValueError for a state mismatch or a flow it cannot continue.
            logger.info("sign-in response refused: %s", type(exc).__name__)
            raise SignInError("The sign-in response could not be used.", reason="bad_response") from None
        if not isinstance(result, dict) or "error" in result:
            error = result.get("error") if isinstance(result, dict) else None
            logger.info("authorization code refused error=%s", error)
            description = result.get("error_description") if isinstance(result, dict) else None
            raise SignInError(_first_line(description or "The sign-in could not be completed."), reason="code_refused")
        id_claims = result.get("id_token_claims") or {}
        claims = {k: id_claims[k] for k in _USER_CLAIMS if k in id_claims}
        account = id_claims.get("oid", "") + "." + id_claims.get("tid", "") if id_claims.get("oid") else None
        session_id = secrets.token_urlsafe(32)
        self._save(session_id, {"claims": claims, "account": account, "cache": cache.serialize()})
        logger.info("user signed in oid=%s tid=%s", claims.get("oid"), claims.get("tid"))
        return SignedIn(session_id=session_id, claims=claims, next_path=str(record.get("next") or "/"))

    def user(self, session_id: str | None) -> Mapping[str, Any] | None:
        """The signed-in user's claims, or ``None``."""
        session = self._load(session_id)
        return None if session is None else session["claims"]

    def sign_out(self, session_id: str | None, *, post_logout_redirect_uri: str | None = None) -> str:
        """Forget the session on the server and return the tenant's logout URL to send the browser to."""
        if session_id:
            self.store.delete(_session_key(session_id))
        config = self._auth.config
        url = f"{config.authority}/oauth2/v2.0/logout"
        if post_logout_redirect_uri:
            url += "?" + urlencode({"post_logout_redirect_uri": post_logout_redirect_uri})
        return url

    # -- tokens for the signed-in user -------------------------------------------------------------------

    def authorization_header(self, session_id: str | None, *, scopes: Sequence[str]) -> str:
        """``"Bearer …"`` for the signed-in user and ``scopes``, from the session's tokens (refreshed with its
        refresh token when due; one refresh at a time per session). Raises :class:`SignInRequired`."""
        token = self.access_token(session_id, scopes=scopes)
        return f"Bearer {token}"

    def access_token(self, session_id: str | None, *, scopes: Sequence[str]) -> str:
        if not session_id:
            raise SignInRequired("Sign in first.", reason="no_session")
        with self._lock_for(session_id):
            session = self._load(session_id)
            if session is None:
                raise SignInRequired("Sign in first.", reason="no_session")
            cache = _new_cache()
            cache.deserialize(session["cache"])
            app = self._app(cache)
            accounts = app.get_accounts()
            account = next((a for a in accounts if a.get("home_account_id") == session.get("account")), None)
            if account is None and accounts:
                account = accounts[0]
            result = app.acquire_token_silent(list(scopes), account=account) if account else None
            if cache.has_state_changed:
                session["cache"] = cache.serialize()
                self._save(session_id, session)
        if not result or "access_token" not in result:
            logger.info("silent token for a signed-in user failed error=%s", (result or {}).get("error"))
            raise SignInRequired("Sign in again to continue.", reason="silent_failed")
        return str(result["access_token"])

    # -- internals ---------------------------------------------------------------------------------------

    def _app(self, cache: Any) -> Any:
        return self._auth.acquirer.web_app(cache)

    def _lock_for(self, session_id: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(session_id)
            if lock is None:
                if len(self._locks) > 10_000:
                    self._locks.clear()
                lock = self._locks[session_id] = threading.Lock()
            return lock

    def _load(self, session_id: str | None) -> dict[str, Any] | None:
        if not session_id or not isinstance(session_id, str) or len(session_id) > 128:
            return None
        raw = self.store.get(_session_key(session_id))
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    def _save(self, session_id: str, session: Mapping[str, Any]) -> None:
        self.store.set(_session_key(session_id), json.dumps(session).encode(), self.session_ttl)


def _pending_key(pending_id: str) -> str:
    return "signin:pending:" + pending_id


def _session_key(session_id: str) -> str:
    return "signin:session:" + session_id


def _new_cache() -> Any:
    import msal

    return msal.SerializableTokenCache()


def _first_line(text: object) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line[:300]

