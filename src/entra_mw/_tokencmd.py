"""``entra-mw token``: a token from the emulator (or an in-process FakeEntra) for a test user, an app or an agent.

The tokens are obtained the way apps obtain them, over the token endpoint: the test-only password grant for a
user (through the emulator's client app), client credentials for an app, and the agent-identity flows (T1, then
client credentials, On-Behalf-Of or ``user_fic``) through ``Downstream`` for an agent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx2

from ._emulator import DEFAULT_SEED, EmulatorError, build_directory, default_env_file, read_settings
from ._tokenview import decode_token

if TYPE_CHECKING:
    from ._engine import EntraAuth

__all__ = ["Mode", "Target", "TokenRequestSpec", "get_token", "in_process_target", "target_from_settings"]

Mode = Literal["user", "app", "agent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where the tokens come from: the emulator's settings, or an in-process FakeEntra."""

    instance: str
    tenant_id: str
    api_id: str
    client_id: str
    client_secret: str = field(repr=False)
    blueprint_id: str
    blueprint_secret: str = field(repr=False)
    agent_id: str
    agent_user: str
    users: tuple[str, ...]
    password: str = field(repr=False)
    ca_file: str | None = None
    transport: httpx2.BaseTransport | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRequestSpec:
    mode: Mode
    user: str | None = None
    agent_user: str | None = None
    scopes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    api: str | None = None


def _required(settings: Mapping[str, str], name: str, path: Path) -> str:
    value = settings.get(name)
    if not value:
        raise EmulatorError(f"{path} has no {name}; restart `entra-mw emulator` to rewrite it")
    return value


def target_from_settings(path: Path | None) -> Target:
    where = path if path is not None else default_env_file()
    s = read_settings(where)
    return Target(
        instance=_required(s, "AzureAd__Instance", where),
        tenant_id=_required(s, "AzureAd__TenantId", where),
        api_id=_required(s, "AzureAd__ClientId", where),
        client_id=_required(s, "ENTRA_EMULATOR_CLIENT_ID", where),
        client_secret=_required(s, "ENTRA_EMULATOR_CLIENT_SECRET", where),
        blueprint_id=_required(s, "ENTRA_EMULATOR_BLUEPRINT_ID", where),
        blueprint_secret=_required(s, "ENTRA_EMULATOR_BLUEPRINT_SECRET", where),
        agent_id=_required(s, "ENTRA_EMULATOR_AGENT_ID", where),
        agent_user=_required(s, "ENTRA_EMULATOR_AGENT_USER", where),
        users=tuple(u for u in _required(s, "ENTRA_EMULATOR_USERS", where).replace(",", " ").split()),
        password=_required(s, "ENTRA_EMULATOR_USER_PASSWORD", where),
        ca_file=s.get("ENTRA_EMULATOR_CA_FILE") or s.get("SSL_CERT_FILE"),
    )


@contextlib.contextmanager
def in_process_target(seed: str = DEFAULT_SEED) -> Iterator[Target]:
    """The emulator's directory on a FakeEntra living in this process only (its signing key dies with it)."""
    from .testing import FakeEntra

    fake = FakeEntra()
    d = build_directory(fake, seed)
    try:
        yield Target(
            instance="https://login.microsoftonline.com/",
            tenant_id=d.tenant.tenant_id,
            api_id=d.api.app_id,
            client_id=d.client.app_id,
            client_secret=d.client_secret,
            blueprint_id=d.blueprint.app_id,
            blueprint_secret=d.blueprint_secret,
            agent_id=d.agent.app_id,
            agent_user=d.agent_user.upn,
            users=tuple(u.upn for u in d.users),
            password=d.password,
            transport=fake.transport,
        )
    finally:
        fake.close()


# -- the flows ------------------------------------------------------------------------------------------------------


def _resource(target: Target, api: str | None) -> str:
    value = (api or target.api_id).strip().rstrip("/")
    if "://" in value:
        return value
    return f"api://{value}"


def _scopes(resource: str, scopes: Sequence[str]) -> list[str]:
    out: list[str] = []
    for item in scopes:
        for scope in item.split():
            out.append(scope if "://" in scope or scope.startswith("api:") else f"{resource}/{scope}")
    return out or [f"{resource}/.default"]


def _upn(target: Target, name: str) -> str:
    low = name.lower()
    for upn in (*target.users, target.agent_user):
        if upn.lower() == low or upn.lower().split("@", 1)[0] == low:
            return upn
    if "@" in name:
        return name
    known = ", ".join(u.split("@", 1)[0] for u in target.users)
    raise EmulatorError(f"no test user {name!r} in the emulator (its users: {known})")


def _http(target: Target) -> httpx2.Client:
    if target.transport is not None:
        return httpx2.Client(transport=target.transport, timeout=10)
    import ssl

    verify = ssl.create_default_context(cafile=target.ca_file) if target.ca_file else True
    return httpx2.Client(verify=verify, timeout=10)


def _password_grant(target: Target, username: str, scopes: Sequence[str]) -> str:
    url = f"{target.instance}{target.tenant_id}/oauth2/v2.0/token"
    form = {
        "grant_type": "password",
        "client_id": target.client_id,
        "client_secret": target.client_secret,
        "username": username,
        "password": target.password,
        "scope": " ".join(scopes),
    }
    with _http(target) as client:
        reply = client.post(url, data=form)
    try:
        body: Any = reply.json()
    except ValueError:
        body = None
    if reply.status_code == 200 and isinstance(body, dict) and isinstance(body.get("access_token"), str):
        return str(body["access_token"])
    description = body.get("error_description") if isinstance(body, dict) else None
    reason = str(description).split("\r\n", 1)[0] if description else f"HTTP {reply.status_code}"
    raise EmulatorError(f"the sign-in of {username} failed: {reason}")


def _engine(target: Target, client_id: str, secret: str) -> EntraAuth:
    from ._config import EntraConfig
    from ._engine import EntraAuth
    from .credentials import ClientSecret

    config = EntraConfig(
        tenant_id=target.tenant_id,
        client_id=client_id,
        instance=target.instance,
        credentials=[ClientSecret(secret)],
        token_request_retries=0,
    )
    if target.transport is not None:
        return EntraAuth(config, transport=target.transport)
    return EntraAuth(config, verify=target.ca_file or True)


def _strip(header: str) -> str:
    return header.split(" ", 1)[1] if " " in header else header


def _acquire(target: Target, spec: TokenRequestSpec) -> str:
    resource = _resource(target, spec.api)
    if spec.mode == "user":
        if spec.user is None:
            raise EmulatorError("--user needs a user name")
        return _password_grant(target, _upn(target, spec.user), _scopes(resource, spec.scopes))
    if spec.mode == "app":
        with contextlib.closing(_engine(target, target.client_id, target.client_secret)) as auth:
            return _strip(auth.downstream().authorization_header("api", scopes=[f"{resource}/.default"], app=True))
    with contextlib.closing(_engine(target, target.blueprint_id, target.blueprint_secret)) as auth:
        if spec.user is not None:
            # Agent On-Behalf-Of: the user signs in to the blueprint (Tc), the agent exchanges Tc.
            access = f"api://{target.blueprint_id}/access_agent"
            tc = _password_grant(target, _upn(target, spec.user), [access])
            caller = auth.downstream(auth.validate(tc), tc)
            header = caller.for_agent(target.agent_id).authorization_header(
                "api", scopes=_scopes(resource, spec.scopes)
            )
        elif spec.agent_user is not None:
            agent = auth.downstream().for_agent(target.agent_id, username=_upn(target, spec.agent_user))
            header = agent.authorization_header("api", scopes=_scopes(resource, spec.scopes))
        else:
            header = (
                auth.downstream()
                .for_agent(target.agent_id)
                .authorization_header("api", scopes=[f"{resource}/.default"], app=True)
            )
        return _strip(header)


def get_token(target: Target, spec: TokenRequestSpec) -> str:
    """A token for ``spec`` from ``target``; :class:`EmulatorError` (one line) for every expected failure."""
    from .errors import EntraError

    try:
        token = _acquire(target, spec)
    except httpx2.TransportError as exc:
        raise EmulatorError(
            f"the emulator at {target.instance} does not answer ({type(exc).__name__}); is `entra-mw emulator` running?"
        ) from None
    except EntraError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "connect" in message.lower() or "unavailable" in type(exc).__name__.lower():
            message += f"; is `entra-mw emulator` running at {target.instance}?"
        raise EmulatorError(message) from None
    if spec.roles:
        _, claims = decode_token(token)
        roles = claims.get("roles")
        granted: list[Any] = roles if isinstance(roles, list) else []
        missing = [role for role in spec.roles if role not in granted]
        if missing:
            who = "the agent" if spec.mode == "agent" else "the client app"
            have = ", ".join(str(r) for r in granted) or "none"
            raise EmulatorError(f"{who} is not granted {', '.join(missing)} on this API (it has: {have})")
    return token
