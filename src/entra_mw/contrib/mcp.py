"""Entra ID for MCP servers built with the ``mcp`` SDK (>= 2.3).

The SDK ships no JWT verifier, and what it does check trips over Entra: a v2 token's ``aud`` is the app's client
id GUID rather than the server's URL (so ``validate_token_resource`` refuses it), ``scp`` holds short scope
names while ``AuthSettings.required_scopes`` must name full ones, and its challenges never carry ``scope``.
This module closes each gap on the engine every other integration uses::

    from mcp.server.mcpserver import MCPServer
    from entra_mw.contrib.mcp import EntraTokenVerifier, ScopeChallengeMiddleware, auth_settings

    settings = auth_settings(auth, resource_server_url="https://mcp.contoso.com/mcp", scopes=["Tools.Use"])
    verifier = EntraTokenVerifier(auth, resource=str(settings.resource_server_url))
    mcp = MCPServer("contoso", token_verifier=verifier, auth=settings)
    app = ScopeChallengeMiddleware(mcp.streamable_http_app(), settings=settings)

Inside a tool, :func:`current_downstream` calls downstream APIs On-Behalf-Of the caller and :func:`require`
states what one tool needs beyond the server-wide scopes.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import PrivateAttr

from .._bearer import authorization_from_scope, token_from
from .._context import AuthContext
from .._engine import EntraAuth
from .._principal import Principal
from .._requirements import Requirement
from ..errors import (
    Challenge,
    EntraError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    ProviderUnavailable,
)
from ..resource_metadata import (
    check_resource,
    configuration_problems,
    full_scopes,
    issuer_v2,
    log_problems,
    metadata_url,
)

if TYPE_CHECKING:
    from .._downstream import Downstream

__all__ = [
    "EntraAccessToken",
    "EntraTokenVerifier",
    "ScopeChallengeMiddleware",
    "auth_settings",
    "current_context",
    "current_downstream",
    "current_principal",
    "require",
]

logger = logging.getLogger("entra_mw.mcp")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

P = ParamSpec("P")
R = TypeVar("R")

# Where EntraTokenVerifier tells ScopeChallengeMiddleware (same request, same task) that keys, not the token,
# were at fault: the SDK can only answer 401, the middleware turns that answer into the engine's 503.
_UNAVAILABLE: ContextVar[list[ProviderUnavailable] | None] = ContextVar("entra_mw_mcp_unavailable", default=None)

# Claims copied into AccessToken.claims for the SDK (its session binding reads "iss"); the full verified claims
# stay on the Principal (current_principal()).
_SDK_CLAIMS = ("iss", "tid", "oid", "sub", "ver", "azp", "appid", "idtyp", "preferred_username", "name")


class EntraAccessToken(AccessToken):
    """The SDK's ``AccessToken`` as :class:`EntraTokenVerifier` fills it, carrying the request's
    :class:`~entra_mw.AuthContext` (the verified :class:`~entra_mw.Principal` and what On-Behalf-Of needs).

    ``scopes`` holds each delegated scope twice, as Entra's short name (``scp``) and in full-URI form (what
    ``AuthSettings.required_scopes`` names), followed by the app roles (``roles``). ``resource`` is the server's
    canonical resource whenever the engine accepted the token's audience.
    """

    _context: AuthContext | None = PrivateAttr(default=None)

    @property
    def context(self) -> AuthContext:
        ctx = self._context
        if ctx is None:
            raise LookupError("this access token was not built by EntraTokenVerifier")
        return ctx


class EntraTokenVerifier:
    """The SDK's ``TokenVerifier`` on the entra_mw engine: signature, issuer, tenant, audience, lifetime and the
    rest of Entra's validation rules, with the validated-token cache.

    ``resource`` is the server's canonical resource (``AuthSettings.resource_server_url``, one of the app's App
    ID URIs). Entra's v2 tokens name the app by its client id (``aud`` = GUID) and v1 tokens by the App ID URI
    the client asked for; whichever the engine accepted, the token is reported as issued for ``resource``, so
    the SDK's ``validate_token_resource`` check passes for tokens of this app and only for them.

    The protocol lets a verifier answer only ``None`` for a refused token, so the reason is logged (logger
    ``entra_mw.mcp``, INFO; a key outage at WARNING), never the token::

        verifier = EntraTokenVerifier(auth, resource="https://mcp.contoso.com/mcp")
        mcp = MCPServer("contoso", token_verifier=verifier, auth=settings)
    """

    def __init__(self, auth: EntraAuth, *, resource: str) -> None:
        if not isinstance(auth, EntraAuth):
            raise TypeError("EntraTokenVerifier needs an EntraAuth")
        self.auth = auth
        self.resource = check_resource(str(resource))
        self._resource_prefix = self.resource.rstrip("/") + "/"

    def __repr__(self) -> str:
        return f"EntraTokenVerifier(resource={self.resource!r}, client_id={self.auth.config.client_id!r})"

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await self.auth.avalidate(token)
        except InvalidToken as exc:
            logger.info("mcp token refused reason=%s: %s", exc.reason, exc.description)
            return None
        except ProviderUnavailable as exc:
            # The SDK can only answer 401 here; say loudly that the keys, not the token, are at fault, and let
            # ScopeChallengeMiddleware (when installed) answer 503 with Retry-After instead.
            logger.warning("mcp token not checked: signing keys unavailable reason=%s", exc.reason)
            box = _UNAVAILABLE.get()
            if box is not None:
                box.append(exc)
            return None
        return self.access_token(principal, token)

    def access_token(self, principal: Principal, token: str) -> EntraAccessToken:
        """The SDK's view of a verified token (see :class:`EntraAccessToken`)."""
        short = sorted(principal.scopes)
        scopes = [*short, *(self._resource_prefix + s for s in short), *sorted(principal.roles)]
        exp = principal.get("exp")
        out = EntraAccessToken(
            token=token,
            client_id=principal.client_id or "",
            scopes=scopes,
            expires_at=int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
            resource=self.resource,
            subject=principal.sub or principal.oid,
            claims={name: principal[name] for name in _SDK_CLAIMS if name in principal},
        )
        out._context = AuthContext(self.auth, principal, token)
        return out


def auth_settings(
    auth: EntraAuth,
    *,
    resource_server_url: str,
    scopes: Iterable[str] = (),
    service_documentation_url: str | None = None,
) -> AuthSettings:
    """The SDK's ``AuthSettings`` built right for Entra.

    - ``issuer_url``: the tenant's v2 issuer (``{instance}{tenant}/v2.0``), the authorization server the
      protected-resource document names; clients find Entra's endpoints from its OpenID configuration.
    - ``resource_server_url``: the server's URL, which must also be one of the app's App ID URIs (Expose an API
      > Application ID URI) — the value clients send Entra as ``resource`` (RFC 8707).
    - ``required_scopes``: ``scopes`` in full ``{App ID URI}/{scope}`` form (short names are put under
      ``resource_server_url``); they are also the document's ``scopes_supported``.
    - ``validate_token_resource=True``: :class:`EntraTokenVerifier` reports the resource a token was accepted
      for.

    Logs a warning with the fix when the URL is not among the App ID URIs the config knows (``audiences``,
    ``api://{client_id}``) or a scope is named under another resource — both make Entra refuse the sign-in
    (AADSTS9010010). ::

        settings = auth_settings(auth, resource_server_url="https://mcp.contoso.com/mcp", scopes=["Tools.Use"])
        settings.required_scopes   # ['https://mcp.contoso.com/mcp/Tools.Use']
    """
    if not isinstance(auth, EntraAuth):
        raise TypeError("auth_settings needs an EntraAuth")
    resource = check_resource(str(resource_server_url))
    wanted = full_scopes(resource, scopes)
    log_problems(configuration_problems(auth.config, resource, wanted))
    return AuthSettings.model_validate(
        {
            "issuer_url": issuer_v2(auth.config),
            "resource_server_url": resource,
            "required_scopes": list(wanted) or None,
            "validate_token_resource": True,
            "service_documentation_url": service_documentation_url,
        }
    )


# -- inside a tool ------------------------------------------------------------------------------------------


def current_context() -> AuthContext:
    """The current MCP request's :class:`~entra_mw.AuthContext`, from the SDK's own auth context (which follows
    the request into the tool's task). Raises ``LookupError`` outside an authenticated request or when the
    server's verifier is not :class:`EntraTokenVerifier`."""
    token = get_access_token()
    if token is None:
        raise LookupError("no authenticated MCP request: is the server built with auth= and token_verifier=?")
    if not isinstance(token, EntraAccessToken):
        raise LookupError("the MCP server's token_verifier is not entra_mw.contrib.mcp.EntraTokenVerifier")
    return token.context


def current_principal() -> Principal:
    """The verified caller of the current MCP request (see :func:`current_context`)."""
    principal = current_context().principal
    if principal is None:  # pragma: no cover - the verifier only builds contexts for verified callers
        raise LookupError("the current MCP request has no caller")
    return principal


def current_downstream() -> Downstream:
    """A :class:`~entra_mw.Downstream` for the caller of the current MCP request: delegated APIs are called
    On-Behalf-Of the caller (or, with ``for_agent``, as an agent for them); the caller's own token is the OBO
    assertion and is never sent to an API. Built once per request.

    ::

        @mcp.tool()
        async def my_files() -> str:
            response = await current_downstream().acall("graph", "me/drive/root/children")
            return response.text
    """
    return current_context().downstream


@dataclass(frozen=True, slots=True)
class _ToolRule:
    name: str
    requirement: Requirement


_RULE_ATTR = "__entra_mw_tool__"


def _challenge_scopes(requirement: Requirement, resource: str | None) -> tuple[str, ...]:
    # What the client must ask Entra for: delegated scopes in full-URI form; app roles come with .default.
    if requirement.scopes:
        return full_scopes(resource, requirement.scopes) if resource else tuple(requirement.scopes)
    return tuple(requirement.roles)


def require(
    *, scopes: Iterable[str] = (), roles: Iterable[str] = (), name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a tool that needs a delegated scope (``scp``) or an app role (``roles``) beyond the server-wide
    ones; either one satisfies it, as with :class:`~entra_mw.Requirement`. Put it under ``@mcp.tool()``.

    The check runs in the tool: a caller without the scope gets a tool error starting with
    ``insufficient_scope`` and naming the scope in full-URI form (the SDK turns any tool failure into a result
    with ``isError``). To answer with an HTTP 403 ``insufficient_scope`` challenge instead — what MCP clients
    act on to ask the user for more — also pass the tool to :class:`ScopeChallengeMiddleware` (``tools=``).
    ``name`` is the tool's MCP name when it differs from the function's. ::

        @mcp.tool()
        @require(scopes=["Forecast.Read"])
        async def forecast(city: str) -> str: ...
    """
    requirement = Requirement(scopes=tuple(scopes), roles=tuple(roles))

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        rule = _ToolRule(name or fn.__name__, requirement)
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(fn):
            afn = cast("Callable[P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                _check_tool(rule)
                return await afn(*args, **kwargs)

            wrapper = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                _check_tool(rule)
                return fn(*args, **kwargs)

            wrapper = sync_wrapper
        setattr(wrapper, _RULE_ATTR, rule)
        return cast("Callable[P, R]", wrapper)

    return decorate


def _check_tool(rule: _ToolRule) -> None:
    token = get_access_token()
    if not isinstance(token, EntraAccessToken) or token.context.principal is None:
        raise ToolError(f"invalid_token: the tool {rule.name!r} needs a caller signed in with Entra ID")
    if rule.requirement.is_satisfied_by(token.context.principal):
        return
    wanted = " ".join(_challenge_scopes(rule.requirement, token.resource))
    logger.info("mcp tool refused tool=%s reason=insufficient_scope", rule.name)
    raise ToolError(f'insufficient_scope: the tool {rule.name!r} needs scope="{wanted}"')


# -- challenges ---------------------------------------------------------------------------------------------

_SCOPE_PARAM = re.compile(rb"(?:^bearer|,)\s*scope\s*=", re.IGNORECASE)
_PEEK_LIMIT = 1 << 20  # JSON-RPC requests are small; bigger bodies pass through unread by this middleware


class ScopeChallengeMiddleware:
    """Pure-ASGI wrapper around the SDK's app: adds ``scope="…"`` (``settings.required_scopes``) to the 401 and
    403 challenges the SDK sends, keeping ``resource_metadata`` and everything else as they are. The MCP
    authorization spec says challenges SHOULD name the scopes; the SDK never does.

    It also reads the bearer token as every other adapter does (RFC 6750) before the SDK sees the request: a
    second credential (two ``Authorization`` headers, a folded value, an ``access_token`` in the query) or a
    malformed one gets 400 ``invalid_request``, and the token reaches the SDK as one canonical header (the SDK
    would read only the first header). When the verifier could not check a token because no signing keys could
    be had, the SDK's 401 becomes 503 with ``Retry-After``, as every other adapter answers.

    With ``verifier`` and ``tools`` (functions decorated with :func:`require`) it also answers a ``tools/call``
    of such a tool by a caller without its scope with HTTP 403 ``insufficient_scope``, ``scope`` naming the
    tool's scopes in full-URI form, before the SDK runs the tool — the step-up challenge MCP clients act on.

    ::

        app = ScopeChallengeMiddleware(mcp.streamable_http_app(), settings=settings,
                                       verifier=verifier, tools=[forecast])

    Logs a warning with the fix when a scope in ``settings`` is not in full-URI form.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: AuthSettings,
        verifier: EntraTokenVerifier | None = None,
        tools: Iterable[Callable[..., Any]] = (),
    ) -> None:
        if not isinstance(settings, AuthSettings):
            raise TypeError("ScopeChallengeMiddleware needs settings=AuthSettings(...) (see auth_settings)")
        self.app = app
        self.settings = settings
        scopes = list(settings.required_scopes or ())
        self._scope_param = ' scope="' + " ".join(scopes) + '"' if scopes else ""
        resource = str(settings.resource_server_url) if settings.resource_server_url else None
        self._resource = resource
        self._required = tuple(scopes)
        self._metadata_url = metadata_url(resource) if resource else None
        self._challenge = Challenge(resource_metadata=self._metadata_url, scope=tuple(scopes))
        if resource:
            log_problems(configuration_problems(None, resource, scopes))
        rules: dict[str, Requirement] = {}
        for fn in tools:
            rule = getattr(fn, _RULE_ATTR, None)
            if not isinstance(rule, _ToolRule):
                raise TypeError(f"{getattr(fn, '__name__', fn)!r} is not decorated with entra_mw.contrib.mcp.require")
            rules[rule.name] = rule.requirement
        if rules and verifier is None:
            raise TypeError("ScopeChallengeMiddleware(tools=...) needs verifier=EntraTokenVerifier(...)")
        self.verifier = verifier
        self.tools = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        anonymous = False
        if not scope.get("path", "").startswith("/.well-known/"):
            try:
                scope, anonymous = self._canonical_authorization(scope)
            except InvalidRequest as exc:
                await _send_error(self._challenge.apply(exc), send)
                return
        if self.tools and scope.get("method") == "POST":
            replayed = await self._check_tool_call(scope, receive, send)
            if replayed is None:
                return
            receive = replayed
        box: list[ProviderUnavailable] = []
        reset = _UNAVAILABLE.set(box)
        inner_send = self._with_scope(send) if self._scope_param else send
        try:
            await self.app(scope, receive, self._unavailable(box, anonymous, inner_send))
        finally:
            _UNAVAILABLE.reset(reset)

    def _unavailable(self, box: list[ProviderUnavailable], anonymous: bool, send: Send) -> Send:
        """``send``, but the SDK's 401 becomes the engine's answer: a 503 (with ``Retry-After``) when the verifier
        could not check the token for want of signing keys, and a bare ``Bearer`` challenge (RFC 6750 §3.1: no
        ``error`` when no credentials were sent) with ``resource_metadata`` and ``scope`` when no token came."""
        replaced = False

        async def send_checked(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message.get("status") == 401 and (box or anonymous):
                replaced = True
                error = box[0] if box else MissingToken("A bearer token is required.", reason="missing_token")
                await _send_error(self._challenge.apply(error), send)
                return
            if replaced and message["type"] == "http.response.body":
                return
            await send(message)

        return send_checked

    def _canonical_authorization(self, scope: Scope) -> tuple[Scope, bool]:
        """The request as the core reads it (RFC 6750): a second credential (another header, a folded value, an
        ``access_token`` in the query) or a malformed one raises ``InvalidRequest``; a token is handed to the SDK
        as one ``Authorization: Bearer <token>`` header, since the SDK reads only the first header and only
        ``Bearer`` followed by exactly one space. The flag says no credentials came at all."""
        try:
            token = token_from(authorization_from_scope(scope), scope.get("query_string"))
        except MissingToken:
            return scope, True  # the SDK answers 401; the challenge is made bare on the way out
        headers = [(n, v) for n, v in scope.get("headers", ()) if n.lower() != b"authorization"]
        headers.append((b"authorization", b"Bearer " + token.encode("ascii")))
        return {**scope, "headers": headers}, False

    def _with_scope(self, send: Send) -> Send:
        param = self._scope_param.encode("latin-1", "replace")

        async def send_with_scope(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") in (401, 403):
                headers = message.get("headers") or ()
                message = {**message, "headers": [(n, _add_scope(n, v, param)) for n, v in headers]}
            await send(message)

        return send_with_scope

    async def _check_tool_call(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the JSON-RPC body; answer 403 here (returning ``None``) when it calls a tool the caller may not
        use, else return a ``receive`` that replays what was read."""
        chunks: list[bytes] = []
        size = 0
        more = True
        first: Message | None = None
        while more and size <= _PEEK_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                first = message
                break
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = bool(message.get("more_body", False))
        replay = _replay(chunks, more, first, receive)
        if more or first is not None:
            return replay
        requirement, name = self._requirement_for(b"".join(chunks))
        if requirement is None:
            return replay
        assert self.verifier is not None
        try:
            ctx = await self.verifier.auth.aauthenticate(authorization_from_scope(scope))
        except EntraError:
            return replay  # no or bad token: the SDK answers 401, with scope added by this middleware
        assert ctx.principal is not None
        if requirement.is_satisfied_by(ctx.principal):
            return replay
        logger.info("mcp tool refused tool=%s reason=insufficient_scope", name)
        wanted = _challenge_scopes(requirement, self._resource)
        if requirement.scopes:
            # A step-up challenge names everything the next token needs, the server-wide scopes included: a client
            # that asks Entra for only the tool's scope could come back with a token the server refuses.
            wanted = tuple(dict.fromkeys([*self._required, *wanted]))
        exc = InsufficientScope(
            wanted,
            f"The tool {name!r} needs a scope this token does not grant.",
            resource_metadata=self._metadata_url,
        )
        await _send_error(exc, send)
        return None

    def _requirement_for(self, body: bytes) -> tuple[Requirement | None, str]:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            # Not JSON, or nested deeper than the parser goes: not a tool call this middleware can judge; the SDK
            # answers it (a JSON-RPC parse error).
            return None, ""
        messages = payload if isinstance(payload, list) else [payload]
        for message in messages:
            if not isinstance(message, dict) or message.get("method") != "tools/call":
                continue
            params = message.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            if isinstance(name, str) and name in self.tools:
                return self.tools[name], name
        return None, ""


async def _send_error(exc: EntraError, send: Send) -> None:
    body = exc.body()
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in exc.headers()]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _add_scope(name: bytes, value: bytes, param: bytes) -> bytes:
    if name.lower() != b"www-authenticate" or value[:6].lower() != b"bearer" or _SCOPE_PARAM.search(value):
        return value
    return b"Bearer" + param if value.strip().lower() == b"bearer" else value + b"," + param


def _replay(chunks: list[bytes], more: bool, pending: Message | None, receive: Receive) -> Receive:
    queue: list[Message] = [
        {"type": "http.request", "body": b"".join(chunks), "more_body": more},
    ]
    if pending is not None:
        queue.append(pending)

    async def replayed() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replayed
