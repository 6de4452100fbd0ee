"""FakeEntra's interactive side: ``/authorize``, the sign-in and consent pages, SSO sessions and ``/logout``.

The Microsoft identity platform's authorization-code flow (ED v2-oauth2-auth-code-flow.md, spec §5):

* ``GET|POST /{tenant}/oauth2/v2.0/authorize`` with ``response_type=code``, PKCE (``S256`` required for public
  clients, ``S256`` or ``plain`` accepted for confidential ones), ``state``, ``nonce``, ``prompt``
  (``login``, ``none``, ``consent``, ``select_account``), ``login_hint``, ``max_age`` and
  ``response_mode=query|fragment|form_post``;
* errors as Entra places them: a request whose client or redirect URI cannot be trusted (unknown client,
  AADSTS50011 redirect URI not registered, unknown tenant) is answered **on the page** and never redirected;
  every later error (unsupported response type, missing PKCE, bad scope, ``login_required`` …) goes back to the
  redirect URI with ``error``, ``error_description`` (``AADSTSnnnnn: …`` and the trace lines), ``error_uri``
  and ``state``;
* a plain HTML sign-in page (one form: ``username``, ``password``, a submit button; no JavaScript) posting to
  ``/{tenant}/login``, and a consent page (``decision=accept|deny``) posting to ``/{tenant}/consent`` when the
  client holds no grant yet for the scopes asked;
* an SSO session cookie after sign-in (``prompt=login`` and ``max_age`` force a new sign-in; ``prompt=none``
  without one answers ``login_required``), cleared by ``GET|POST /{tenant}/oauth2/v2.0/logout``, which redirects
  to ``post_logout_redirect_uri`` only when it is one of the app's registered redirect URIs.

CSRF: each pending sign-in has an unguessable flow id and a per-flow token in the form; the browser that
loaded the page carries a ``SameSite=Lax`` binding cookie that must come back with the post. A post from
another site (no cookie) or with another flow's token is refused.

The authorization code is single-use, lives 10 minutes on ``fake.clock`` and is bound to the client, the
redirect URI, the PKCE challenge and the nonce; the token endpoint redeems it (``_token_endpoint``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import html
import re
import secrets
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Final

import httpx2
import jwt

from ._mint import EXCHANGE_AUDIENCE, OIDC_SCOPES
from ._registry import TEMPLATE_TENANTS, App, Tenant, User

if TYPE_CHECKING:
    from ._fake import FakeEntra

__all__ = [
    "AUTH_CODE_LIFETIME",
    "BROWSER_COOKIE",
    "SESSION_COOKIE",
    "AuthCode",
    "drive_sign_in",
    "InteractiveState",
    "handle_authorize",
    "handle_consent",
    "handle_login",
    "handle_logout",
    "pkce_matches",
    "redirect_uri_matches",
    "resource_indicator_matches",
    "requested_resources",
]

AUTH_CODE_LIFETIME: Final = 600  # seconds; Entra's codes are short-lived (about 10 minutes)
_FLOW_LIFETIME: Final = 900  # a sign-in page left open longer must start again (AADSTS50089)
_SESSION_LIFETIME: Final = 24 * 3600
SESSION_COOKIE: Final = "fakeentra_session"
BROWSER_COOKIE: Final = "fakeentra_browser"
_PROMPTS: Final = frozenset({"login", "none", "consent", "select_account"})
_RESPONSE_MODES: Final = frozenset({"query", "fragment", "form_post"})
_PKCE: Final = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_MAX_PARAM: Final = 4096
_MAX_FLOWS: Final = 10_000  # pending sign-ins kept at once (the oldest are dropped)
_GRAPH_URI: Final = "https://graph.microsoft.com"
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})


# -- state ---------------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True, kw_only=True)
class AuthCode:
    """An issued authorization code and everything it is bound to."""

    tenant_id: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    user_oid: str
    sid: str
    auth_time: int
    max_age: bool
    expires_at: float
    redeemed: bool = False
    refresh_tokens: list[str] = field(default_factory=list)


@dataclass(eq=False, slots=True, kw_only=True)
class _Flow:
    flow_id: str
    csrf: str
    browser: str
    segment: str
    tenant_id: str | None
    client_id: str
    redirect_uri: str
    response_mode: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    prompt: str | None
    login_hint: str
    max_age: int | None
    expires_at: float
    user_oid: str | None = None
    sid: str | None = None
    auth_time: int = 0


@dataclass(eq=False, slots=True, kw_only=True)
class _Session:
    sid: str
    user_oid: str
    tenant_id: str
    auth_time: int
    expires_at: float


@dataclass(eq=False, slots=True)
class InteractiveState:
    """What the interactive endpoints remember, owned by one FakeEntra."""

    flows: dict[str, _Flow] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)


# -- errors --------------------------------------------------------------------------------------------------


class _PageError(Exception):
    """An error Entra shows on its own page: the redirect URI cannot be trusted yet."""

    def __init__(self, code: int, text: str, *, status: int = 400) -> None:
        super().__init__(f"AADSTS{code}")
        self.code = code
        self.text = text
        self.status = status


class _RedirectError(Exception):
    """An error Entra returns to the (validated) redirect URI."""

    def __init__(self, error: str, code: int, text: str) -> None:
        super().__init__(f"AADSTS{code}")
        self.error = error
        self.code = code
        self.text = text


def _stamp(fake: FakeEntra) -> str:
    return datetime.datetime.fromtimestamp(fake.clock.time(), datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _description(fake: FakeEntra, code: int, text: str) -> str:
    return (
        f"AADSTS{code}: {text}\r\nTrace ID: {uuid.uuid4()}\r\nCorrelation ID: {uuid.uuid4()}\r\n"
        f"Timestamp: {_stamp(fake)}"
    )


# -- request parsing -----------------------------------------------------------------------------------------


def _params(request: httpx2.Request) -> dict[str, str]:
    """Query parameters (GET) or form fields (POST); duplicates and oversized values are refused."""
    if request.method == "POST":
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise _PageError(9002313, "Invalid request. The request body must be a form.")
        try:
            text = request.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _PageError(9002313, "Invalid request. Request is malformed or invalid.") from exc
    elif request.method in ("GET", "HEAD"):
        text = request.url.query.decode("ascii", "replace")
    else:
        raise _PageError(900561, f"The endpoint only accepts GET, POST requests. Received a {request.method[:16]}.")
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=100)
    except ValueError as exc:
        raise _PageError(9002313, "Invalid request. Request is malformed or invalid.") from exc
    out: dict[str, str] = {}
    for key, value in pairs:
        if len(value) > _MAX_PARAM:
            raise _PageError(90015, f"The value of '{key[:40]}' is too long.")
        if key in out and out[key] != value:
            raise _PageError(9002313, f"Invalid request. The parameter '{key[:40]}' is duplicated.")
        out[key] = value
    return out


def _cookies(request: httpx2.Request) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in request.headers.get_list("cookie"):
        try:
            jar.load(header)
        except CookieError:
            continue
    return {name: morsel.value for name, morsel in jar.items()}


def _set_cookie(name: str, value: str, *, max_age: int | None = None) -> str:
    parts = [f"{name}={value}", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


# -- directory lookups ---------------------------------------------------------------------------------------


def _tenant_of(fake: FakeEntra, segment: str) -> Tenant | None:
    if segment.lower() in TEMPLATE_TENANTS:
        return None
    tenant = fake.registry.tenant(segment) if len(segment) <= 256 else None
    if tenant is None:
        raise _PageError(
            90002,
            f"Tenant '{segment[:100]}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud.",
        )
    return tenant


def _client_of(fake: FakeEntra, tenant: Tenant | None, client_id: str | None) -> App:
    if not client_id:
        raise _PageError(900144, "The request body must contain the following parameter: 'client_id'.")
    app = fake.registry.app(client_id) if len(client_id) <= 100 else None
    if app is not None and (app.is_managed_identity or app.is_blueprint):
        app = None  # neither signs users in
    if app is not None and tenant is not None and app.tenant_id != tenant.tenant_id and not app.multi_tenant:
        app = None
    if app is None:
        where = tenant.tenant_id if tenant is not None else "the directory"
        raise _PageError(
            700016,
            f"Application with identifier '{client_id[:100]}' was not found in the directory '{where}'. This can "
            "happen if the application has not been installed by the administrator of the tenant or consented to "
            "by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
        )
    return app


def resource_indicator_matches(resource: App | str, value: str) -> bool:
    """Whether an RFC 8707 ``resource`` names the same resource as the scopes: its app id or an App ID URI."""
    low = value.rstrip("/").lower()
    if isinstance(resource, str):
        return low == resource.lower()
    return low == resource.app_id.lower() or any(u.rstrip("/").lower() == low for u in resource.identifier_uris)


def redirect_uri_matches(app: App, uri: str) -> bool:
    """Whether ``uri`` is one of ``app``'s redirect URIs: exact, except that a loopback registration matches any
    port (Entra's rule for ``http://localhost`` / ``http://127.0.0.1`` desktop redirect URIs)."""
    if uri in app.redirect_uris:
        return True
    asked = urllib.parse.urlsplit(uri)
    if asked.scheme != "http" or asked.hostname is None or asked.netloc.split(":")[0].lower() not in _LOOPBACK_HOSTS:
        return False
    for registered in app.redirect_uris:
        reg = urllib.parse.urlsplit(registered)
        if (
            reg.scheme == "http"
            and reg.netloc.split(":")[0].lower() == asked.netloc.split(":")[0].lower()
            and (reg.path or "/") == (asked.path or "/")
            and reg.query == asked.query
        ):
            return True
    return False


def _redirect_uri(app: App, given: str | None) -> str:
    if not given:
        if not app.redirect_uris:
            raise _PageError(900971, "No reply address provided.")
        return app.redirect_uris[0]
    if not redirect_uri_matches(app, given):
        raise _PageError(
            50011,
            f"The redirect URI '{given[:300]}' specified in the request does not match the redirect URIs configured "
            f"for the application '{app.app_id}'. Make sure the redirect URI sent in the request matches one added "
            "to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn "
            "more about how to fix this.",
        )
    return given


@dataclass(frozen=True, slots=True)
class _Requested:
    resource: App
    names: tuple[str, ...]  # short scope names (".default" possible)


def requested_resources(
    fake: FakeEntra, raw: str, *, tenant_id: str | None, client_id: str
) -> tuple[list[_Requested], frozenset[str]]:
    """The resources and scope names an authorize ``scope`` asks for, and its OpenID Connect scopes.

    Resourceless names are Microsoft Graph's; a sign-in-only request (OIDC scopes alone) asks Graph for
    ``User.Read``, as Entra's access token then targets Graph.
    """
    items = list(dict.fromkeys(raw.split()))
    oidc = frozenset(i.lower() for i in items if i.lower() in OIDC_SCOPES)
    grouped: dict[str, list[str]] = {}
    for item in items:
        if item.lower() in OIDC_SCOPES:
            continue
        prefix, _, name = item.rpartition("/") if "/" in item else (_GRAPH_URI, "", item)
        if not prefix or not name or prefix.endswith(":") or prefix.endswith(":/"):
            raise _RedirectError(
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope {item[:200]} is not "
                "valid.",
            )
        grouped.setdefault(prefix.rstrip("/"), []).append(name)
    if not grouped:
        if not oidc:
            raise _RedirectError(
                "invalid_request", 900144, "The request body must contain the following parameter: 'scope'."
            )
        grouped = {_GRAPH_URI: ["User.Read"]}
    out: list[_Requested] = []
    for prefix, names in grouped.items():
        resource = _resource(fake, prefix, tenant_id)
        if resource is None:
            raise _RedirectError(
                "invalid_resource",
                500011,
                f"The resource principal named {prefix[:200]} was not found in the tenant named "
                f"{tenant_id or 'the directory'}. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You might have sent your "
                "authentication request to the wrong tenant.",
            )
        exposed = {s.lower(): s for s in resource.scopes}
        short: list[str] = []
        for name in names:
            if name == ".default":
                short.append(name)
                continue
            found = exposed.get(name.lower())
            if found is None:
                raise _RedirectError(
                    "invalid_client",
                    650053,
                    f"The application '{client_id}' asked for scope '{name[:100]}' that doesn't exist on the "
                    f"resource '{resource.app_id}'. Contact the app vendor.",
                )
            short.append(found)
        if ".default" in short and len(short) > 1:
            raise _RedirectError(
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid. '.default' cannot be combined "
                "with other scopes.",
            )
        merged = next((r for r in out if r.resource is resource), None)
        if merged is not None:
            out[out.index(merged)] = _Requested(resource, tuple(dict.fromkeys((*merged.names, *short))))
        else:
            out.append(_Requested(resource, tuple(short)))
    return out, oidc


def _resource(fake: FakeEntra, identifier: str, tenant_id: str | None) -> App | None:
    if identifier.lower() == EXCHANGE_AUDIENCE.lower() or len(identifier) > 1000:
        return None
    if identifier.lower() in (_GRAPH_URI, "00000003-0000-0000-c000-000000000000"):
        return fake.microsoft_graph()
    app = fake.registry.app_by_identifier(identifier)
    if app is None or app.is_managed_identity:
        return None
    if tenant_id is not None and app.tenant_id != tenant_id and not app.multi_tenant:
        return None
    return app


def _missing_consent(fake: FakeEntra, client: App, user: User, requested: list[_Requested]) -> list[_Requested]:
    out: list[_Requested] = []
    for item in requested:
        if item.resource.app_id == "00000003-0000-0000-c000-000000000000" and item.names == ("User.Read",):
            continue  # signing in and reading one's own profile needs no separate grant here
        consented = {
            c.lower() for c in fake.registry.consented_scopes(client.app_id, item.resource.app_id, user.object_id)
        }
        names = item.resource.scopes if item.names == (".default",) else item.names
        if (item.names == (".default",) and not consented) or any(n.lower() not in consented for n in names):
            out.append(_Requested(item.resource, tuple(names)))
    return out


# -- pages ---------------------------------------------------------------------------------------------------

_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}"
    "h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}"
    "button{margin-top:1rem;padding:.5rem 1.2rem}.error{color:#a80000}.muted{color:#666;font-size:.85rem}"
)
_PAGE_HEADERS: Final = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store, no-cache",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _page(
    title: str, body: str, *, status: int = 200, cookies: list[str] | None = None, script: bool = False
) -> httpx2.Response:
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
    headers = list(_PAGE_HEADERS.items())
    if script:
        # The form_post answer may submit itself (as Entra's does); it still works without JavaScript.
        headers = [
            (k, "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; frame-ancestors 'none'")
            if k == "Content-Security-Policy"
            else (k, v)
            for k, v in headers
        ]
    headers.extend(("Set-Cookie", c) for c in cookies or [])
    return httpx2.Response(status, headers=headers, content=doc.encode("utf-8"))


def _error_page(fake: FakeEntra, err: _PageError) -> httpx2.Response:
    body = (
        "<h1>Sorry, but we're having trouble signing you in.</h1>\n"
        f'<p class="error" id="error">{html.escape(_description(fake, err.code, err.text))}</p>'
    )
    return _page("Sign in - error", body, status=err.status)


def _hidden(flow: _Flow) -> str:
    return (
        f'<input type="hidden" name="flow" value="{html.escape(flow.flow_id)}">'
        f'<input type="hidden" name="csrf" value="{html.escape(flow.csrf)}">'
    )


def _sign_in_page(
    fake: FakeEntra, flow: _Flow, client: App, *, error: str | None = None, username: str = "", status: int = 200
) -> httpx2.Response:
    message = f'<p class="error" id="error" role="alert">{html.escape(error)}</p>\n' if error else ""
    prefill = username or flow.login_hint
    body = (
        "<h1>Sign in</h1>\n"
        f"<p>to continue to <strong>{html.escape(client.display_name)}</strong></p>\n{message}"
        f'<form method="post" action="/{urllib.parse.quote(flow.segment, safe="")}/login">{_hidden(flow)}\n'
        '<label for="username">Email, phone, or Skype</label>'
        f'<input id="username" name="username" type="email" autocomplete="username" required '
        f'value="{html.escape(prefill)}">\n'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password" required>\n'
        '<button type="submit" id="submit">Sign in</button>\n</form>\n'
        '<p class="muted">FakeEntra test sign-in. Never enter a real password here.</p>'
    )
    return _page("Sign in to your account", body, status=status, cookies=[_set_cookie(BROWSER_COOKIE, flow.browser)])


def _consent_page(flow: _Flow, client: App, missing: list[_Requested], user: User) -> httpx2.Response:
    items = "".join(
        f"<li>{html.escape(item.resource.display_name)}: {html.escape(name)}</li>"
        for item in missing
        for name in item.names
    )
    body = (
        "<h1>Permissions requested</h1>\n"
        f"<p><strong>{html.escape(client.display_name)}</strong> wants to act as "
        f'<strong>{html.escape(user.upn)}</strong> with these permissions:</p>\n<ul id="scopes">{items}</ul>\n'
        f'<form method="post" action="/{urllib.parse.quote(flow.segment, safe="")}/consent">{_hidden(flow)}\n'
        '<button type="submit" name="decision" value="accept" id="accept">Accept</button>\n'
        '<button type="submit" name="decision" value="deny" id="deny">Cancel</button>\n</form>'
    )
    return _page("Permissions requested", body)


def _deliver(flow: _Flow, fields: Mapping[str, str]) -> httpx2.Response:
    """Send the authorization response (code or error) to the redirect URI in the requested mode."""
    values = {k: v for k, v in fields.items() if v}
    if flow.response_mode == "form_post":
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in values.items()
        )
        body = (
            f'<form method="post" action="{html.escape(flow.redirect_uri)}" id="response">{inputs}\n'
            "<noscript><p>Script is disabled. Click Continue to go on.</p></noscript>"
            '<button type="submit" id="continue">Continue</button></form>\n'
            "<script>document.getElementById('response').submit();</script>"
        )
        return _page("Working...", body, script=True)
    encoded = urllib.parse.urlencode(values)
    if flow.response_mode == "fragment":
        location = f"{flow.redirect_uri}#{encoded}"
    else:
        location = f"{flow.redirect_uri}{'&' if '?' in flow.redirect_uri else '?'}{encoded}"
    return httpx2.Response(302, headers={"Location": location, "Cache-Control": "no-store, no-cache"})


def _redirect_error(fake: FakeEntra, flow: _Flow, err: _RedirectError) -> httpx2.Response:
    return _deliver(
        flow,
        {
            "error": err.error,
            "error_description": _description(fake, err.code, err.text),
            "error_uri": f"https://{fake.authority_host}/error?code={err.code}",
            "state": flow.state or "",
        },
    )


# -- /authorize ----------------------------------------------------------------------------------------------


def _state(fake: FakeEntra) -> InteractiveState:
    return fake._interactive_state


def _prune(fake: FakeEntra, now: float) -> None:
    state = _state(fake)
    for table in (state.flows, state.codes, state.sessions):
        stale = [k for k, v in table.items() if v.expires_at <= now]
        for key in stale:
            del table[key]
    while len(state.flows) > _MAX_FLOWS:
        del state.flows[next(iter(state.flows))]


def _check_pkce(client: App, params: Mapping[str, str]) -> tuple[str | None, str | None]:
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method") or None
    if challenge is None:
        if method is not None:
            raise _RedirectError(
                "invalid_request", 900144, "The request body must contain the following parameter: 'code_challenge'."
            )
        if client.public_client:
            raise _RedirectError(
                "invalid_request",
                9002325,
                "Proof Key for Code Exchange is required for this public client. Send code_challenge and "
                "code_challenge_method=S256.",
            )
        return None, None
    method = method or "plain"
    if method not in ("S256", "plain") or (client.public_client and method != "S256"):
        raise _RedirectError(
            "invalid_request",
            50149,
            f"Invalid Code_Challenge_method parameter '{method[:20]}'. "
            + ("Public clients must use S256." if client.public_client else "Use S256 or plain."),
        )
    if not _PKCE.match(challenge):
        raise _RedirectError("invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
    return challenge, method


def handle_authorize(fake: FakeEntra, segment: str, request: httpx2.Request) -> httpx2.Response:
    """Answer ``/{tenant}/oauth2/v2.0/authorize`` (see the module docstring)."""
    now = fake.clock.time()
    with fake.lock:
        _prune(fake, now)
        try:
            params = _params(request)
            tenant = _tenant_of(fake, segment)
            client = _client_of(fake, tenant, params.get("client_id"))
            redirect_uri = _redirect_uri(client, params.get("redirect_uri"))
        except _PageError as err:
            return _error_page(fake, err)
        mode = params.get("response_mode") or "query"
        browser = _cookies(request).get(BROWSER_COOKIE) or ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", browser):
            browser = secrets.token_urlsafe(32)
        flow = _Flow(
            flow_id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            browser=browser,
            segment=tenant.tenant_id if tenant is not None else segment.lower(),
            tenant_id=tenant.tenant_id if tenant is not None else None,
            client_id=client.app_id,
            redirect_uri=redirect_uri,
            response_mode=mode if mode in _RESPONSE_MODES else "query",
            scope=params.get("scope", ""),
            state=params.get("state") or None,
            nonce=params.get("nonce") or None,
            code_challenge=None,
            code_challenge_method=None,
            prompt=params.get("prompt") or None,
            login_hint=params.get("login_hint", "")[:256],
            max_age=None,
            expires_at=now + _FLOW_LIFETIME,
        )
        try:
            if mode not in _RESPONSE_MODES:
                raise _RedirectError(
                    "invalid_request", 70007, f"The response_mode '{mode[:40]}' is not supported for this request."
                )
            _check_response_type(params.get("response_type"))
            flow.code_challenge, flow.code_challenge_method = _check_pkce(client, params)
            if flow.prompt is not None and flow.prompt not in _PROMPTS:
                raise _RedirectError("invalid_request", 90023, f"Unsupported 'prompt' value '{flow.prompt[:40]}'.")
            if params.get("max_age"):
                try:
                    flow.max_age = int(params["max_age"])
                except ValueError:
                    flow.max_age = -1
                if flow.max_age < 0:
                    raise _RedirectError("invalid_request", 90100, "The parameter 'max_age' is empty or not valid.")
            requested, _ = requested_resources(fake, flow.scope, tenant_id=flow.tenant_id, client_id=client.app_id)
            indicator = params.get("resource")
            if indicator and not resource_indicator_matches(requested[0].resource, indicator):
                # RFC 8707 ``resource`` (sent by MCP clients) must name the scopes' resource on the v2 endpoint.
                raise _RedirectError(
                    "invalid_target",
                    9010010,
                    "The resource parameter provided in the request doesn't match with the requested scopes.",
                )
            session = _usable_session(fake, request, flow, now)
            if session is not None:
                user = fake.registry.users.get(session.user_oid)
                if user is not None:
                    flow.user_oid, flow.sid, flow.auth_time = user.object_id, session.sid, session.auth_time
                    _state(fake).flows[flow.flow_id] = flow
                    return _after_sign_in(fake, flow, client, user)
            if flow.prompt == "none":
                raise _RedirectError(
                    "login_required",
                    50058,
                    "A silent sign-in request was sent but no user is signed in. The cookies used to represent the "
                    "user's session were not sent in the request to Azure AD.",
                )
        except _RedirectError as err:
            return _redirect_error(fake, flow, err)
        _state(fake).flows[flow.flow_id] = flow
        return _sign_in_page(fake, flow, client)


def _check_response_type(value: str | None) -> None:
    if not value:
        raise _RedirectError(
            "invalid_request", 900144, "The request body must contain the following parameter: 'response_type'."
        )
    kinds = set(value.split())
    if kinds == {"code"}:
        return
    if "id_token" in kinds:
        raise _RedirectError(
            "unsupported_response_type", 700054, "response_type 'id_token' is not enabled for the application."
        )
    if "token" in kinds:
        raise _RedirectError(
            "unsupported_response_type", 700051, "response_type 'token' is not enabled for the application."
        )
    raise _RedirectError(
        "unsupported_response_type", 70005, f"The response_type '{value[:40]}' is not supported; use 'code'."
    )


def _usable_session(fake: FakeEntra, request: httpx2.Request, flow: _Flow, now: float) -> _Session | None:
    if flow.prompt in ("login", "select_account"):
        return None
    sid = _cookies(request).get(SESSION_COOKIE)
    session = _state(fake).sessions.get(sid) if sid else None
    if session is None or session.expires_at <= now:
        return None
    if flow.tenant_id is not None and session.tenant_id != flow.tenant_id:
        return None
    if flow.max_age is not None and now - session.auth_time > flow.max_age:
        return None
    if flow.login_hint:
        user = fake.registry.users.get(session.user_oid)
        if user is None or user.upn.lower() != flow.login_hint.lower():
            return None
    return session


def _after_sign_in(fake: FakeEntra, flow: _Flow, client: App, user: User) -> httpx2.Response:
    """The user is known: check the client may serve them, ask for consent when needed, else issue the code."""
    try:
        if client.tenant_id != user.tenant_id and not client.multi_tenant:
            raise _RedirectError(
                "invalid_request",
                700016,
                f"Application with identifier '{client.app_id}' was not found in the directory '{user.tenant_id}'.",
            )
        requested, _ = requested_resources(fake, flow.scope, tenant_id=user.tenant_id, client_id=client.app_id)
        missing = _missing_consent(fake, client, user, requested)
        if flow.prompt == "consent" and not missing:
            missing = [r for r in requested if r.resource.app_id != "00000003-0000-0000-c000-000000000000"]
        if missing:
            if flow.prompt == "none":
                raise _RedirectError(
                    "consent_required",
                    65001,
                    f"The user or administrator has not consented to use the application with ID '{client.app_id}' "
                    f"named '{client.display_name}'. Send an interactive authorization request for this user and "
                    "resource.",
                )
            return _consent_page(flow, client, missing, user)
    except _RedirectError as err:
        _state(fake).flows.pop(flow.flow_id, None)
        return _redirect_error(fake, flow, err)
    return _issue_code(fake, flow, user)


def _issue_code(fake: FakeEntra, flow: _Flow, user: User) -> httpx2.Response:
    state = _state(fake)
    state.flows.pop(flow.flow_id, None)
    code = f"1.A{secrets.token_urlsafe(48)}"
    state.codes[code] = AuthCode(
        tenant_id=user.tenant_id,
        client_id=flow.client_id,
        redirect_uri=flow.redirect_uri,
        scope=flow.scope,
        nonce=flow.nonce,
        code_challenge=flow.code_challenge,
        code_challenge_method=flow.code_challenge_method,
        user_oid=user.object_id,
        sid=flow.sid or "",
        auth_time=flow.auth_time,
        max_age=flow.max_age is not None,
        expires_at=fake.clock.time() + AUTH_CODE_LIFETIME,
    )
    return _deliver(flow, {"code": code, "state": flow.state or "", "session_state": flow.sid or ""})


# -- sign-in and consent posts ---------------------------------------------------------------------------------


def _posted_flow(fake: FakeEntra, segment: str, request: httpx2.Request) -> tuple[_Flow, dict[str, str]]:
    if request.method != "POST":
        raise _PageError(
            900561, f"The endpoint only accepts POST requests. Received a {request.method[:16]}.", status=405
        )
    form = _params(request)
    flow = _state(fake).flows.get(form.get("flow", ""))
    if flow is None or flow.expires_at <= fake.clock.time():
        raise _PageError(
            50089,
            "Authentication failed due to flow token expired. Start the sign-in again from the application.",
        )
    browser = _cookies(request).get(BROWSER_COOKIE, "")
    if not (
        hmac.compare_digest(form.get("csrf", "").encode(), flow.csrf.encode())
        and hmac.compare_digest(browser.encode(), flow.browser.encode())
    ):
        # Another site posted this form, or another browser replays it (CSRF): refuse and drop the flow.
        _state(fake).flows.pop(flow.flow_id, None)
        raise _PageError(
            90023, "The request could not be verified: it did not come from this sign-in page.", status=403
        )
    if segment.lower() != flow.segment.lower():
        raise _PageError(90023, "The sign-in was posted to another tenant.")
    return flow, form


def handle_login(fake: FakeEntra, segment: str, request: httpx2.Request) -> httpx2.Response:
    """The sign-in form's post: check the password, start an SSO session, continue to consent or the code."""
    now = fake.clock.time()
    with fake.lock:
        try:
            flow, form = _posted_flow(fake, segment, request)
            client = fake.registry.app(flow.client_id)
            if client is None:  # pragma: no cover - apps are never removed
                raise _PageError(700016, "The application is gone.")
        except _PageError as err:
            return _error_page(fake, err)
        username = form.get("username", "").strip()[:256]
        password = form.get("password", "")
        user = fake.registry.user(username) if username else None
        if user is None or (flow.tenant_id is not None and user.tenant_id != flow.tenant_id):
            return _sign_in_page(
                fake,
                flow,
                client,
                username=username,
                error=_description(
                    fake,
                    50034,
                    "We couldn't find an account with that username. The account must be added to the directory.",
                ),
            )
        if user.password is None or not hmac.compare_digest(
            user.password.encode("utf-8"), password.encode("utf-8", "surrogatepass")
        ):
            return _sign_in_page(
                fake,
                flow,
                client,
                username=username,
                error=_description(fake, 50126, "Your account or password is incorrect."),
            )
        sid = str(uuid.uuid4())
        _state(fake).sessions[sid] = _Session(
            sid=sid,
            user_oid=user.object_id,
            tenant_id=user.tenant_id,
            auth_time=int(now),
            expires_at=now + _SESSION_LIFETIME,
        )
        flow.user_oid, flow.sid, flow.auth_time = user.object_id, sid, int(now)
        response = _after_sign_in(fake, flow, client, user)
        return httpx2.Response(
            response.status_code,
            headers=[*response.headers.multi_items(), ("Set-Cookie", _set_cookie(SESSION_COOKIE, sid))],
            content=response.content,
        )


def handle_consent(fake: FakeEntra, segment: str, request: httpx2.Request) -> httpx2.Response:
    """The consent form's post: record the user's grant and issue the code, or return ``access_denied``."""
    with fake.lock:
        try:
            flow, form = _posted_flow(fake, segment, request)
            client = fake.registry.app(flow.client_id)
            user = fake.registry.users.get(flow.user_oid or "")
            if client is None or user is None:
                raise _PageError(50089, "Authentication failed due to flow token expired. Sign in again.")
        except _PageError as err:
            return _error_page(fake, err)
        if form.get("decision") != "accept":
            _state(fake).flows.pop(flow.flow_id, None)
            return _redirect_error(
                fake, flow, _RedirectError("access_denied", 65004, "User declined to consent to access the app.")
            )
        try:
            requested, _ = requested_resources(fake, flow.scope, tenant_id=user.tenant_id, client_id=client.app_id)
        except _RedirectError as err:
            _state(fake).flows.pop(flow.flow_id, None)
            return _redirect_error(fake, flow, err)
        for item in requested:
            names = item.resource.scopes if item.names == (".default",) else item.names
            if names:
                fake.grant_consent(client, item.resource, list(names), user=user)
        return _issue_code(fake, flow, user)


# -- /logout ---------------------------------------------------------------------------------------------------


def handle_logout(fake: FakeEntra, segment: str, request: httpx2.Request) -> httpx2.Response:
    """End the SSO session; redirect to ``post_logout_redirect_uri`` only when the app registered it."""
    with fake.lock:
        try:
            params = _params(request)
            _tenant_of(fake, segment)
        except _PageError as err:
            return _error_page(fake, err)
        sid = _cookies(request).get(SESSION_COOKIE)
        if sid:
            _state(fake).sessions.pop(sid, None)
        clear = [_set_cookie(SESSION_COOKIE, "", max_age=0)]
        target = params.get("post_logout_redirect_uri")
        app = _logout_app(fake, params)
        if target and app is not None and redirect_uri_matches(app, target):
            query = urllib.parse.urlencode({"state": params["state"]}) if params.get("state") else ""
            location = f"{target}{('&' if '?' in target else '?') + query if query else ''}"
            return httpx2.Response(
                302,
                headers=[("Location", location), ("Cache-Control", "no-store, no-cache"), ("Set-Cookie", clear[0])],
            )
        note = ""
        if target:
            note = (
                '<p class="error" id="error">'
                + html.escape(
                    _description(
                        fake,
                        50011,
                        f"The post_logout_redirect_uri '{target[:300]}' is not a redirect URI registered for the "
                        "application (name the app with client_id or id_token_hint), so you were not sent back.",
                    )
                )
                + "</p>"
            )
        body = f"<h1>You signed out of your account</h1>\n<p>It's a good idea to close all browser windows.</p>{note}"
        return _page("Signed out", body, cookies=clear)


def _logout_app(fake: FakeEntra, params: Mapping[str, str]) -> App | None:
    client_id = params.get("client_id")
    if not client_id and params.get("id_token_hint"):
        try:
            claims: dict[str, Any] = fake.decode(params["id_token_hint"])
        except (jwt.PyJWTError, ValueError, KeyError, TypeError):
            return None  # an undecodable hint names no app
        aud = claims.get("aud")
        client_id = aud if isinstance(aud, str) else None
    if not client_id or len(client_id) > 100:
        return None
    return fake.registry.app(client_id)


def pkce_matches(code: AuthCode, verifier: str) -> bool:
    """RFC 7636 §4.6: ``S256`` compares ``BASE64URL(SHA256(verifier))``, ``plain`` the verifier itself."""
    if code.code_challenge is None:
        return True
    if code.code_challenge_method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    else:
        computed = verifier
    return hmac.compare_digest(computed.encode(), code.code_challenge.encode())


# -- a person at a browser (for tests) ---------------------------------------------------------------------------


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.error = ""
        self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), {}))
        elif tag == "input" and self.forms and a.get("type") == "hidden" and a.get("name"):
            self.forms[-1][1][a["name"]] = a.get("value", "")
        elif a.get("id") == "error":
            self._in_error = True

    def handle_endtag(self, tag: str) -> None:
        self._in_error = False

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.error += data


def _parse_page(response: httpx2.Response) -> _Forms:
    parser = _Forms()
    parser.feed(response.text)
    return parser


def _authorization_response(response: httpx2.Response) -> dict[str, str] | None:
    if response.status_code == 302:
        location = urllib.parse.urlsplit(response.headers.get("location", ""))
        return dict(urllib.parse.parse_qsl(location.fragment or location.query))
    page = _parse_page(response)
    if response.status_code == 200 and len(page.forms) == 1:
        fields = page.forms[0][1]
        if "code" in fields or "error" in fields:  # response_mode=form_post
            return fields
    return None


def drive_sign_in(client: httpx2.Client, url: str, *, username: str, password: str, consent: bool) -> dict[str, str]:
    """Open ``url`` (an authorize URL), sign in, consent (or decline), and return what the browser would take to
    the redirect URI. Raises ``ValueError`` with Entra's message when a page shows an error instead."""
    response = client.get(url, follow_redirects=False)
    for step in ("sign-in", "consent", "done"):
        answer = _authorization_response(response)
        if answer is not None:
            return answer
        page = _parse_page(response)
        if response.status_code != 200 or len(page.forms) != 1:
            raise ValueError(page.error.strip() or f"FakeEntra answered {response.status_code} at the {step} step")
        action, fields = page.forms[0]
        target = urllib.parse.urljoin(str(response.url), action)
        if action.endswith("/login"):
            response = client.post(
                target, data={**fields, "username": username, "password": password}, follow_redirects=False
            )
            retry = _parse_page(response)
            if response.status_code == 200 and retry.forms and retry.forms[0][0].endswith("/login"):
                raise ValueError(retry.error.strip() or "sign-in failed")
        else:
            response = client.post(
                target, data={**fields, "decision": "accept" if consent else "deny"}, follow_redirects=False
            )
    raise ValueError("the sign-in did not finish")  # pragma: no cover - at most sign-in, consent, answer
