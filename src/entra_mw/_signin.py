"""Web sign-in, framework-free: a web app signs users in with the authorization-code flow (PKCE, ``state``,
``nonce``), keeps their tokens on the server, and gets API tokens for them silently.

MSAL is the protocol engine (``initiate_auth_code_flow`` / ``acquire_token_by_auth_code_flow`` check ``state``,
send the PKCE verifier and check the ID token's ``nonce``, ``aud`` and ``iss``); this module decides everything
else, once for every framework:

- what is kept where: the browser holds only opaque random ids (a short-lived *pending* id between login and
  callback, then a *session* id); the flow (with the PKCE verifier), the user's claims and MSAL's token cache
  (with the refresh token) stay in a server-side :class:`SessionStore`, never in a cookie;
- the pending record is single-use (taken atomically), and the session id is new at every sign-in (no fixation)
  and forgotten at sign-out;
- where a user may be sent back to: only a path of this app (:func:`safe_next`);
- cookie attributes: ``HttpOnly``, ``SameSite=Lax``, ``Path=/`` and ``Secure`` unless the app is served on
  loopback (:func:`cookie_attributes`);
- logout is a POST from this app's own pages (:func:`same_origin`), so a link or an image elsewhere cannot sign
  a user out.

Adapters (``entra_mw.contrib.flask``, ``entra_mw.contrib.starlette``, ``entra_mw.contrib.django``) translate: read
the cookie and the callback parameters, call :class:`WebSignIn`, set cookies, redirect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

from ._clock import Clock, SystemClock
from .errors import EntraError

if TYPE_CHECKING:
    from ._acquisition._types import AccessToken
    from ._downstream import Downstream
    from ._engine import EntraAuth

__all__ = [
    "ANONYMOUS",
    "PENDING_COOKIE",
    "SESSION_COOKIE",
    "MemorySessionStore",
    "SessionStore",
    "SignInError",
    "SignInRequired",
    "SignInStart",
    "SignedIn",
    "User",
    "WebSignIn",
    "cookie_attributes",
    "error_page",
    "safe_next",
    "same_origin",
    "sign_in_from_settings",
]

logger = logging.getLogger("entra_mw.signin")
_T = TypeVar("_T")

#: The cookie holding the session id (opaque, random; the session itself is on the server).
SESSION_COOKIE: Final = "entra_mw_session"
#: The cookie binding a callback to the browser that started the sign-in (opaque, random, 10 minutes).
PENDING_COOKIE: Final = "entra_mw_signin"

#: Claims of the ID token kept for the session (what an app shows or keys on; never the whole token).
_USER_CLAIMS: Final = (
    "oid",
    "tid",
    "sub",
    "name",
    "preferred_username",
    "email",
    "login_hint",
    "roles",
    "groups",
    "idp",
    "ver",
)
_PENDING_PREFIX: Final = "entra_mw:signin:pending:"
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_MAX_ID: Final = 128
_LOCK_STRIPES: Final = 64
_MAX_PARAM: Final = 8192


class SignInError(EntraError):
    """The sign-in could not be completed: the callback does not belong to a sign-in started from this browser
    (no or expired pending id, wrong ``state``), Entra answered with an error (wrong user, consent declined),
    the code was refused (replayed, expired, PKCE verifier missing or wrong) or the ID token did not match
    (``nonce``). Renders as 400 (401 when Entra refused the user, 403 for a tenant not allowed, 502/503 when
    Entra could not be used) with a description safe to show."""

    status_code = 400
    error = "sign_in_failed"

    def __init__(self, description: str, *, reason: str = "sign_in_failed", status_code: int = 400) -> None:
        super().__init__(description, reason=reason)
        self.status_code = status_code


class SignInRequired(EntraError):
    """No signed-in user, or the session can no longer get tokens silently (refresh token expired or revoked,
    consent withdrawn): adapters send the browser to sign in again, then back."""

    status_code = 401
    error = "login_required"


class SessionStore(Protocol):
    """Where sign-in state lives on the server. Values are opaque bytes; ``ttl`` is in seconds. ``take`` reads
    and deletes in one step (a pending sign-in is used once, even by two callbacks at the same moment)."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float) -> None: ...

    def take(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> None: ...


class MemorySessionStore:
    """An in-process :class:`SessionStore`: bounded (least recently used go first), entries expire on the
    engine's clock. Pending sign-ins are bounded apart from sessions, so a flood of ``/login`` requests can only
    push out other pending sign-ins, never signed-in users. Good for one process; several replicas need a shared
    store (``RedisSessionStore``)."""

    def __init__(self, *, max_entries: int = 10_000, max_pending: int = 10_000, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._max = {False: max_entries, True: max_pending}
        self._lock = threading.Lock()
        self._parts: dict[bool, OrderedDict[str, tuple[float, bytes]]] = {False: OrderedDict(), True: OrderedDict()}

    def _part(self, key: str) -> OrderedDict[str, tuple[float, bytes]]:
        return self._parts[key.startswith(_PENDING_PREFIX)]

    def get(self, key: str) -> bytes | None:
        with self._lock:
            part = self._part(key)
            entry = part.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock.monotonic():
                del part[key]
                return None
            part.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: bytes, ttl: float) -> None:
        pending = key.startswith(_PENDING_PREFIX)
        with self._lock:
            part = self._parts[pending]
            part[key] = (self._clock.monotonic() + ttl, value)
            part.move_to_end(key)
            while len(part) > self._max[pending]:
                part.popitem(last=False)

    def take(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._part(key).pop(key, None)
        if entry is None or entry[0] <= self._clock.monotonic():
            return None
        return entry[1]

    def delete(self, key: str) -> None:
        with self._lock:
            self._part(key).pop(key, None)

    def keys(self) -> list[str]:
        """Every key held (digests, never a browser's id), for diagnostics and tests."""
        with self._lock:
            return [*self._parts[False], *self._parts[True]]

    def __len__(self) -> int:
        return len(self._parts[False]) + len(self._parts[True])


@dataclass(frozen=True, slots=True)
class User:
    """The signed-in user as the ID token described them (a few claims, kept with the session), or the
    anonymous user (no claims): ``if user:`` and ``user.is_authenticated`` say which.

    ::

        if current_user:
            greeting = f"Hello {current_user.name} ({current_user.username})"
    """

    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_authenticated(self) -> bool:
        return bool(self.claims.get("oid"))

    def __bool__(self) -> bool:
        return self.is_authenticated

    @property
    def oid(self) -> str | None:
        """The user's object id in their tenant (stable: key your data on ``(tid, oid)``)."""
        return _str_claim(self.claims, "oid")

    @property
    def tid(self) -> str | None:
        return _str_claim(self.claims, "tid")

    @property
    def name(self) -> str | None:
        return _str_claim(self.claims, "name")

    @property
    def username(self) -> str | None:
        """``preferred_username``: for display only, never for authorization (it can change)."""
        return _str_claim(self.claims, "preferred_username")


#: The user of a request without a session.
ANONYMOUS: Final = User()


def _str_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignInStart:
    """Where to send the browser (``url``, the tenant's authorize endpoint) and the pending id to keep in the
    :data:`PENDING_COOKIE` until the callback."""

    url: str
    pending_id: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedIn:
    """A completed sign-in: the new session id (set it as the :data:`SESSION_COOKIE`), the user's claims and
    the path of this app to return to."""

    session_id: str = field(repr=False)
    user: User
    next_path: str


def safe_next(value: object, default: str = "/") -> str:
    """``value`` when it is a path of this app (``/orders?id=1``), else ``default``. Refuses absolute and
    scheme-relative URLs (``https://evil``, ``//evil``, ``/\\evil``), control characters, whitespace and anything
    that is not a string, so a ``next`` parameter can never send a user off-site.

    ::

        assert safe_next("/orders?id=1") == "/orders?id=1"
        assert safe_next("//evil.example/") == "/"
    """
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2048:
        return default
    # Browsers read "\" as "/" and drop tabs and newlines inside URLs: "/\evil" and "/\t/evil" are "//evil".
    if value.startswith("//") or "\\" in value:
        return default
    if not value.isprintable() or any(c.isspace() for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def _host_name(host: str | None) -> str:
    name = (host or "").strip().lower()
    if name.startswith("["):
        return name.split("]", 1)[0] + "]"
    if name.count(":") == 1:
        return name.split(":", 1)[0]
    return name


def is_loopback(host: str | None) -> bool:
    """Whether a ``Host`` value (with or without a port) names this machine (``localhost``, ``127.0.0.1``,
    ``[::1]``)."""
    return _host_name(host) in _LOOPBACK


def cookie_attributes(host: str | None, *, max_age: int | None = None, cross_site_post: bool = False) -> dict[str, Any]:
    """The attributes of every cookie web sign-in sets, given the request's ``Host``: ``HttpOnly``,
    ``SameSite=Lax``, ``Path=/`` and ``Secure`` unless the host is loopback (a laptop on ``http://localhost``).

    ``cross_site_post=True`` is for the pending cookie of a ``form_post`` sign-in: Entra's page posts the answer
    from another site, and browsers send only ``SameSite=None; Secure`` cookies with such a post.

    ::

        assert cookie_attributes("app.contoso.com")["secure"] is True
        assert cookie_attributes("localhost:5000")["secure"] is False
    """
    return {
        "httponly": True,
        "samesite": "None" if cross_site_post else "Lax",
        "secure": True if cross_site_post else not is_loopback(host),
        "path": "/",
        "max_age": max_age,
    }


def error_page(exc: EntraError) -> str:
    """The HTML page a browser sees when sign-in fails (answered with ``exc.status_code`` and
    ``Cache-Control: no-store``): the error's description, escaped, and a link to the start page."""
    import html

    return (
        "<!doctype html><meta charset=utf-8><title>Sign-in failed</title><h1>Sign-in failed</h1>"
        f"<p>{html.escape(exc.description)}</p><p><a href='/'>Back to the start page</a></p>"
    )


def same_origin(*, host: str | None, origin: str | None, fetch_site: str | None = None) -> bool:
    """Whether a state-changing request (logout) comes from this app's own pages: the ``Origin`` header, when
    sent, names this host, and ``Sec-Fetch-Site``, when sent, is ``same-origin`` (or ``none``: typed by the user).
    Browsers send ``Origin`` with every POST, so a form on another site is refused.

    ::

        assert same_origin(host="app.contoso.com", origin="https://app.contoso.com")
        assert not same_origin(host="app.contoso.com", origin="https://evil.example")
    """
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    origin = origin.strip()
    if origin == "null" or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.strip().lower()


class WebSignIn:
    """Authorization code + PKCE for a web app, on the engine's configuration and credentials (a secret, a
    certificate, or a managed identity used as a federated credential: no secret at all).

    ::

        signin = WebSignIn(auth, scopes=["api://weather/Weather.Read"])
        start = signin.start(redirect_uri="http://localhost:5000/auth/callback", next_path="/forecast")
        # browser → start.url; keep start.pending_id in the PENDING_COOKIE
        done = signin.finish(pending_id, callback_params)     # at the redirect URI
        # keep done.session_id in the SESSION_COOKIE, redirect to done.next_path
        header = signin.authorization_header(done.session_id, scopes=["api://weather/Weather.Read"])

    ``scopes``: delegated scopes to ask consent for at sign-in (MSAL adds ``openid profile offline_access``).
    ``store``: a :class:`SessionStore` (in memory by default; Redis for several replicas). ``response_mode``:
    ``"form_post"`` (default: the code travels in a POST body, never in a URL, a history entry or a ``Referer``,
    as RFC 9700 §4.3.1 advises; the pending cookie is then ``SameSite=None; Secure``, which browsers also accept
    from ``http://localhost``) or ``"query"`` (MSAL warns about it). ``session_ttl``: seconds a session lives
    without use; ``pending_ttl``: seconds a started sign-in may take.
    """

    def __init__(
        self,
        auth: EntraAuth,
        *,
        scopes: Sequence[str] = (),
        store: SessionStore | None = None,
        response_mode: str = "form_post",
        session_ttl: float = 8 * 3600.0,
        pending_ttl: float = 600.0,
    ) -> None:
        if response_mode not in ("query", "form_post"):
            raise ValueError("response_mode must be 'query' or 'form_post'")
        if isinstance(scopes, str):
            raise TypeError("scopes is a sequence of scopes, not one string")
        self.auth = auth
        self.scopes = tuple(scopes)
        self.store: SessionStore = store if store is not None else MemorySessionStore(clock=auth.clock)
        self.response_mode = response_mode
        self.session_ttl = float(session_ttl)
        self.pending_ttl = float(pending_ttl)
        # One refresh at a time per session (striped: bounded, and sessions rarely collide).
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))

    def __repr__(self) -> str:
        return f"WebSignIn(client_id={self.auth.config.client_id!r}, scopes={list(self.scopes)!r})"

    # -- cookies -------------------------------------------------------------------------------------------

    def session_cookie(self, host: str | None) -> dict[str, Any]:
        """Attributes of the session cookie for a request to ``host``."""
        return cookie_attributes(host, max_age=int(self.session_ttl))

    def pending_cookie(self, host: str | None) -> dict[str, Any]:
        """Attributes of the pending cookie for a request to ``host``."""
        return cookie_attributes(host, max_age=int(self.pending_ttl), cross_site_post=self.response_mode == "form_post")

    # -- the flow ------------------------------------------------------------------------------------------

    def start(
        self,
        *,
        redirect_uri: str,
        next_path: object = None,
        prompt: str | None = None,
        login_hint: str | None = None,
    ) -> SignInStart:
        """Begin a sign-in: the authorize URL (with ``state``, ``nonce`` and a PKCE S256 challenge) and the
        pending id that binds the callback to this browser. Raises :class:`SignInError` (503) when Entra's
        metadata cannot be had."""
        try:
            flow = self._app(None).initiate_auth_code_flow(
                list(self.scopes),
                redirect_uri=redirect_uri,
                prompt=prompt,
                login_hint=login_hint,
                response_mode=self.response_mode,
            )
        except Exception as exc:  # noqa: BLE001 - classified below; anything else re-raised
            raise _unavailable(exc) from None
        pending_id = secrets.token_urlsafe(32)
        record = {"flow": flow, "next": safe_next(next_path)}
        self.store.set(_pending_key(pending_id), json.dumps(record).encode(), self.pending_ttl)
        return SignInStart(url=str(flow["auth_uri"]), pending_id=pending_id)

    async def astart(
        self,
        *,
        redirect_uri: str,
        next_path: object = None,
        prompt: str | None = None,
        login_hint: str | None = None,
    ) -> SignInStart:
        """Async twin of :meth:`start` (MSAL may fetch the tenant's metadata: off the event loop)."""
        import functools

        call = functools.partial(
            self.start, redirect_uri=redirect_uri, next_path=next_path, prompt=prompt, login_hint=login_hint
        )
        return await _off_loop(self, call)

    def finish(self, pending_id: str | None, params: Mapping[str, str]) -> SignedIn:
        """Complete a sign-in at the callback with the parameters Entra sent (query or form). The pending record
        is used once. Raises :class:`SignInError`."""
        record = self._take_pending(pending_id)
        flow: dict[str, Any] = record["flow"]
        answer = _callback_params(params)
        given, expected = str(answer.get("state", "")).encode(), str(flow.get("state", "")).encode()
        if not secrets.compare_digest(given, expected):
            logger.info("sign-in callback refused reason=state")
            raise SignInError("The sign-in response does not match the sign-in that was started.", reason="state")
        if "error" in answer:
            logger.info("sign-in refused by the identity provider error=%s", answer.get("error"))
            raise SignInError(
                _first_line(answer.get("error_description") or answer["error"]), reason="idp_error", status_code=401
            )
        if not answer.get("code"):
            raise SignInError("The sign-in response carries no authorization code.", reason="no_code")
        result = self._redeem(cache := _new_cache(), flow, answer)
        id_claims = result.get("id_token_claims")
        if not isinstance(id_claims, dict) or not id_claims.get("oid") or not id_claims.get("tid"):
            logger.info("sign-in refused reason=id_token")
            raise SignInError("The sign-in did not return a usable ID token.", reason="id_token")
        allowed = self.auth.config.allowed_tenants
        if allowed is not None and str(id_claims["tid"]).lower() not in allowed:
            logger.info("sign-in refused reason=tenant tid=%s", id_claims["tid"])
            raise SignInError("Users of this organization cannot sign in here.", reason="tenant", status_code=403)
        claims = {k: id_claims[k] for k in _USER_CLAIMS if k in id_claims}
        session_id = secrets.token_urlsafe(32)
        account = f"{id_claims['oid']}.{id_claims['tid']}"
        self._save(session_id, {"claims": claims, "account": account, "cache": cache.serialize()})
        logger.info("user signed in oid=%s tid=%s", claims.get("oid"), claims.get("tid"))
        return SignedIn(session_id=session_id, user=User(claims), next_path=str(record.get("next") or "/"))

    async def afinish(self, pending_id: str | None, params: Mapping[str, str]) -> SignedIn:
        """Async twin of :meth:`finish` (the code is redeemed off the event loop)."""
        import functools

        return await _off_loop(self, functools.partial(self.finish, pending_id, dict(params)))

    def user(self, session_id: str | None) -> User:
        """The user signed in with ``session_id``, or :data:`ANONYMOUS`."""
        session = self._load(session_id)
        return ANONYMOUS if session is None else User(session["claims"])

    async def auser(self, session_id: str | None) -> User:
        """Async twin of :meth:`user` (a shared store is read off the event loop)."""
        if isinstance(self.store, MemorySessionStore):
            return self.user(session_id)
        import functools

        return await _off_loop(self, functools.partial(self.user, session_id))

    def sign_out(self, session_id: str | None, *, post_logout_redirect_uri: str | None = None) -> str:
        """Forget the session on the server (its tokens with it) and return the tenant's logout URL, where the
        browser ends its Entra session too. ``post_logout_redirect_uri`` must be one of the app's registered
        redirect URIs for Entra to send the browser back."""
        if session_id and isinstance(session_id, str) and len(session_id) <= _MAX_ID:
            self.store.delete(_session_key(session_id))
        query = {"client_id": self.auth.config.client_id}
        if post_logout_redirect_uri:
            query["post_logout_redirect_uri"] = post_logout_redirect_uri
        return f"{self.auth.config.authority}/oauth2/v2.0/logout?{urlencode(query)}"

    async def asign_out(self, session_id: str | None, *, post_logout_redirect_uri: str | None = None) -> str:
        """Async twin of :meth:`sign_out`."""
        import functools

        call = functools.partial(self.sign_out, session_id, post_logout_redirect_uri=post_logout_redirect_uri)
        if isinstance(self.store, MemorySessionStore):
            return call()
        return await _off_loop(self, call)

    # -- tokens for the signed-in user ---------------------------------------------------------------------

    def authorization_header(self, session_id: str | None, *, scopes: Sequence[str]) -> str:
        """``"Bearer …"`` for the signed-in user and ``scopes`` (see :meth:`access_token`)."""
        return f"Bearer {self.access_token(session_id, scopes=scopes)}"

    async def aauthorization_header(self, session_id: str | None, *, scopes: Sequence[str]) -> str:
        """Async twin of :meth:`authorization_header`."""
        return f"Bearer {await self.aaccess_token(session_id, scopes=scopes)}"

    def access_token(self, session_id: str | None, *, scopes: Sequence[str], force_refresh: bool = False) -> str:
        """An access token for the signed-in user and ``scopes``: from the session's own token cache, refreshed
        with its refresh token when due (one refresh at a time per session). Raises :class:`SignInRequired` when
        there is no session or it cannot get a token silently any more."""
        return self.session_token(session_id, scopes=scopes, force_refresh=force_refresh).token

    def session_token(
        self,
        session_id: str | None,
        *,
        scopes: Sequence[str],
        force_refresh: bool = False,
        claims: str | None = None,
    ) -> AccessToken:
        """:meth:`access_token` with its lifetime (an ``AccessToken``), for the engine's token cache; ``claims``
        is an API's claims challenge (the token is then asked for anew)."""
        from ._acquisition._types import AccessToken

        if isinstance(scopes, str) or not scopes:
            raise TypeError("scopes is a non-empty sequence of scopes")
        if not session_id or not isinstance(session_id, str) or len(session_id) > _MAX_ID:
            raise SignInRequired("Sign in first.", reason="no_session")
        with self._locks[hash(session_id) % _LOCK_STRIPES]:
            session = self._load(session_id)
            if session is None:
                raise SignInRequired("Sign in first.", reason="no_session")
            cache = _new_cache()
            cache.deserialize(session["cache"])
            try:
                app = self._app(cache)
                account = next(
                    (a for a in app.get_accounts() if a.get("home_account_id") == session.get("account")), None
                )
                if account is None:
                    raise SignInRequired("Sign in again to continue.", reason="no_account")
                result = app.acquire_token_silent_with_error(
                    list(scopes), account=account, force_refresh=force_refresh, claims_challenge=claims or None
                )
            except Exception as exc:  # noqa: BLE001 - classified below; anything else re-raised
                raise _unavailable(exc) from None
            if cache.has_state_changed:
                session["cache"] = cache.serialize()
                self._save(session_id, session)
        token = result.get("access_token") if isinstance(result, dict) else None
        if not isinstance(token, str) or not token:
            error = result.get("error") if isinstance(result, dict) else None
            logger.info("silent token for a signed-in user failed error=%s", error)
            if error == "temporarily_unavailable":
                raise _unavailable_error()
            raise SignInRequired("Sign in again to continue.", reason="silent_failed")
        assert isinstance(result, dict)
        try:
            lifetime = float(result.get("expires_in", 0))
        except (TypeError, ValueError):
            lifetime = 0.0
        now = self.auth.clock.time()
        return AccessToken(
            token=token,
            expires_on=now + max(lifetime, 0.0),
            token_type="Bearer",
            scopes=tuple(scopes),
            tenant=str(session["claims"].get("tid") or "") or None,
        )

    async def asession_token(
        self,
        session_id: str | None,
        *,
        scopes: Sequence[str],
        force_refresh: bool = False,
        claims: str | None = None,
    ) -> AccessToken:
        """Async twin of :meth:`session_token` (MSAL runs off the event loop)."""
        import functools

        call = functools.partial(
            self.session_token, session_id, scopes=scopes, force_refresh=force_refresh, claims=claims
        )
        return await _off_loop(self, call)

    def downstream(self, session_id: str | None) -> Downstream:
        """A :class:`~entra_mw.Downstream` acting for the user signed in with ``session_id``: its
        ``authorization_header`` / ``call`` (and async twins) get delegated tokens from the session, through the
        engine's token cache (keyed by the session, one refresh at a time), with all of Downstream's rules.
        Raises :class:`SignInRequired` when nobody is signed in with it::

            response = signin.downstream(session_id).call("weather", "forecast")
        """
        user = self.user(session_id)
        if not user or session_id is None:
            raise SignInRequired("Sign in first.", reason="no_session")
        from ._signin_downstream import SessionDownstream

        return SessionDownstream(self, session_id, user)

    async def adownstream(self, session_id: str | None) -> Downstream:
        """Async twin of :meth:`downstream` (a shared store is read off the event loop)."""
        user = await self.auser(session_id)
        if not user or session_id is None:
            raise SignInRequired("Sign in first.", reason="no_session")
        from ._signin_downstream import SessionDownstream

        return SessionDownstream(self, session_id, user)

    async def aaccess_token(self, session_id: str | None, *, scopes: Sequence[str], force_refresh: bool = False) -> str:
        """Async twin of :meth:`access_token` (MSAL runs off the event loop)."""
        import functools

        call = functools.partial(self.access_token, session_id, scopes=scopes, force_refresh=force_refresh)
        return await _off_loop(self, call)

    # -- internals -----------------------------------------------------------------------------------------

    def _app(self, cache: Any) -> Any:
        return self.auth._tokens.acquirer.web_app(cache)

    def _take_pending(self, pending_id: str | None) -> dict[str, Any]:
        raw = None
        if pending_id and isinstance(pending_id, str) and len(pending_id) <= _MAX_ID:
            raw = self.store.take(_pending_key(pending_id))
        if raw is None:
            logger.info("sign-in callback refused reason=no_pending")
            raise SignInError(
                "No sign-in was started from this browser, or it expired. Sign in again.", reason="no_pending"
            )
        record: dict[str, Any] = json.loads(raw)
        return record

    def _redeem(self, cache: Any, flow: dict[str, Any], answer: dict[str, str]) -> dict[str, Any]:
        from msal.oauth2cli.oidc import IdTokenError

        try:
            result = self._app(cache).acquire_token_by_auth_code_flow(flow, answer, scopes=list(self.scopes) or None)
            if isinstance(result, dict) and self.auth._tokens.acquirer.web_credential_refused(
                result.get("error"), _codes(result)
            ):
                # Entra checks the client before the code, so the code is still good for the next credential.
                logger.warning("the web app's credential was refused; redeeming the code with the next one")
                result = self._app(cache).acquire_token_by_auth_code_flow(
                    flow, answer, scopes=list(self.scopes) or None
                )
        except IdTokenError as exc:
            logger.info("sign-in refused reason=id_token check=%s", type(exc).__name__)
            raise SignInError("The ID token does not match this sign-in.", reason="id_token") from None
        except RuntimeError as exc:
            # MSAL's OIDC client raises a bare RuntimeError when the ID token's nonce is not this sign-in's.
            if "nonce" not in str(exc):
                raise
            logger.info("sign-in refused reason=nonce")
            raise SignInError("The ID token does not match this sign-in.", reason="nonce") from None
        except ValueError as exc:
            # MSAL raises ValueError for a state or nonce mismatch (never logged: the message holds both values).
            if "nonce" in str(exc):
                logger.info("sign-in refused reason=nonce")
                raise SignInError("The ID token does not match this sign-in.", reason="nonce") from None
            if "state" in str(exc):
                logger.info("sign-in refused reason=state")
                raise SignInError(
                    "The sign-in response does not match the sign-in that was started.", reason="state"
                ) from None
            raise _unavailable(exc) from None
        except Exception as exc:  # noqa: BLE001 - classified below; anything else re-raised
            raise _unavailable(exc) from None
        if not isinstance(result, dict):
            raise SignInError(
                "The identity provider's answer could not be understood.", reason="bad_answer", status_code=502
            )
        if "error" in result:
            logger.info(
                "authorization code refused error=%s codes=%s correlation_id=%s",
                result.get("error"),
                result.get("error_codes"),
                result.get("correlation_id"),
            )
            status = 503 if result.get("error") == "temporarily_unavailable" else 400
            raise SignInError(
                _first_line(result.get("error_description") or "The sign-in could not be completed."),
                reason="code_refused",
                status_code=status,
            )
        return result

    def _load(self, session_id: str | None) -> dict[str, Any] | None:
        if not session_id or not isinstance(session_id, str) or len(session_id) > _MAX_ID:
            return None
        raw = self.store.get(_session_key(session_id))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) and isinstance(value.get("claims"), dict) else None

    def _save(self, session_id: str, session: Mapping[str, Any]) -> None:
        self.store.set(_session_key(session_id), json.dumps(session).encode(), self.session_ttl)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignInSettings:
    """A sign-in built from a settings value, with where its routes live."""

    sign_in: WebSignIn
    url_prefix: str = "/auth"
    after_logout: str = "/"


_SETTINGS_KEYS: Final = frozenset(
    {"scopes", "store", "response_mode", "session_ttl", "pending_ttl", "url_prefix", "after_logout"}
)


def sign_in_from_settings(auth: EntraAuth, value: object, *, name: str = "ENTRA_MW_SIGNIN") -> SignInSettings | None:
    """The web sign-in a settings value describes (Flask's ``app.config["ENTRA_MW_SIGNIN"]``, Django's
    ``ENTRA_MW_SIGNIN``), or ``None`` when it is unset. The value is a :class:`WebSignIn`, or a mapping with
    ``scopes``, ``store``, ``response_mode``, ``session_ttl``, ``pending_ttl`` (:class:`WebSignIn`'s arguments),
    ``url_prefix`` (``"/auth"``) and ``after_logout`` (``"/"``). Raises ``ConfigurationError`` naming the key.
    """
    from .errors import ConfigurationError

    if value is None or value is False:
        return None
    if isinstance(value, WebSignIn):
        return SignInSettings(sign_in=value)
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{name} must be a mapping or a WebSignIn, got {type(value).__name__}", key=name)
    unknown = sorted(str(k) for k in value if k not in _SETTINGS_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{name} has unknown keys {unknown}; expected some of {sorted(_SETTINGS_KEYS)}", key=f"{name}.{unknown[0]}"
        )
    scopes = value.get("scopes", ())
    if isinstance(scopes, str):
        scopes = scopes.split()
    prefix = value.get("url_prefix", "/auth")
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix != safe_next(prefix, ""):
        raise ConfigurationError(f"{name}.url_prefix must be a path such as '/auth', got {prefix!r}", key=name)
    after = value.get("after_logout", "/")
    if safe_next(after, "") != after:
        raise ConfigurationError(f"{name}.after_logout must be a path of this app, got {after!r}", key=name)
    kwargs = {k: value[k] for k in ("store", "response_mode", "session_ttl", "pending_ttl") if k in value}
    try:
        sign_in = WebSignIn(auth, scopes=tuple(scopes), **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{name}: {exc}", key=name) from None
    return SignInSettings(sign_in=sign_in, url_prefix=prefix.rstrip("/") or "/auth", after_logout=after)


async def _off_loop(signin: WebSignIn, call: Callable[[], _T]) -> _T:
    import anyio.to_thread

    return await anyio.to_thread.run_sync(call, limiter=signin.auth._tokens.acquirer._limiter())


def _unavailable(exc: BaseException) -> EntraError:
    """An exception from MSAL talking to Entra, as the error to render; a bug is re-raised as itself."""
    import msal.exceptions
    import requests


    if isinstance(exc, EntraError):
        return exc
    if isinstance(exc, requests.RequestException | msal.exceptions.MsalServiceError):
        logger.warning("sign-in: Entra could not be reached (%s)", type(exc).__name__)
        return _unavailable_error()
    if isinstance(exc, ValueError | RecursionError):
        # MSAL parses every answer with json.loads; a broken discovery or token answer lands here.
        logger.warning("sign-in: Entra's answer could not be understood (%s)", type(exc).__name__)
        return SignInError(
            "The identity provider's answer could not be understood.", reason="bad_answer", status_code=502
        )
    raise exc


def _unavailable_error() -> EntraError:
    from .errors import TokenAcquisitionError

    return TokenAcquisitionError(
        "Entra could not be reached; try again shortly.", error="temporarily_unavailable", http_status=None
    )


def _callback_params(params: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(key, str) and isinstance(value, str) and len(value) <= _MAX_PARAM:
            out[key] = value
    return out


def _pending_key(pending_id: str) -> str:
    return _PENDING_PREFIX + hashlib.sha256(pending_id.encode()).hexdigest()


def _session_key(session_id: str) -> str:
    # The store is keyed by a digest: a store dump (or a Redis MONITOR) shows no usable session id.
    return "entra_mw:signin:session:" + hashlib.sha256(session_id.encode()).hexdigest()


def _new_cache() -> Any:
    import msal

    return msal.SerializableTokenCache()


def _first_line(text: object) -> str:
    stripped = str(text).strip()
    return stripped.splitlines()[0][:300] if stripped else ""


def _codes(result: Mapping[str, Any]) -> tuple[int, ...]:
    codes = result.get("error_codes")
    return tuple(c for c in codes if isinstance(c, int)) if isinstance(codes, list) else ()
