"""What the ASGI and WSGI middleware share: their options, checked once at construction, and the
``exclude_paths`` matcher. The decisions themselves are :meth:`EntraAuth.authenticate`'s."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from ._engine import EntraAuth
from ._requirements import Requirement
from .errors import Challenge, ConfigurationError

__all__ = ["MiddlewareOptions", "PathExclusions"]

_App = TypeVar("_App")


class PathExclusions:
    """``exclude_paths`` for the middleware: exact paths (``"/healthz"``) and subtrees (``"/public/*"``
    matches ``/public`` and everything below it). A path with a ``..`` or ``.`` segment never matches a
    subtree, so a router that normalises paths cannot be steered from an excluded prefix into a protected one.

    ::

        excluded = PathExclusions(["/healthz", "/public/*"])
        assert "/public/logo.png" in excluded and "/healthz/x" not in excluded
    """

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, paths: Iterable[str]) -> None:
        if isinstance(paths, str):
            paths = (paths,)
        exact: set[str] = set()
        prefixes: list[str] = []
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(f"exclude_paths entries must start with '/': {path!r}", key="exclude_paths")
            if path.endswith("/*"):
                base = path[:-2]
                if "*" in base:
                    raise ConfigurationError(f"'*' is only allowed as a final '/*': {path!r}", key="exclude_paths")
                exact.add(base or "/")
                prefixes.append(base + "/")
            elif "*" in path:
                raise ConfigurationError(f"'*' is only allowed as a final '/*': {path!r}", key="exclude_paths")
            else:
                exact.add(path)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)

    def __bool__(self) -> bool:
        return bool(self._exact)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        if path in self._exact:
            return True
        if self._prefixes and path.startswith(self._prefixes):
            return "/.." not in path and "/./" not in path and not path.endswith("/.")
        return False


class MiddlewareOptions(Generic[_App]):
    """What the ASGI and the WSGI middleware are built from, checked once at construction: the wrapped
    ``app``, the engine, ``required``, ``exclude_paths`` (a :class:`PathExclusions`) and ``requirement``.

    ::

        class EntraMiddleware(MiddlewareOptions[ASGIApp]): ...
        EntraMiddleware(app, auth=auth, exclude_paths=["/healthz"]).exclude_paths
    """

    def __init__(
        self,
        app: _App,
        *,
        auth: EntraAuth,
        required: bool = True,
        exclude_paths: Iterable[str] = (),
        requirement: Requirement | None = None,
        challenge: Challenge | None = None,
    ) -> None:
        if not isinstance(auth, EntraAuth):
            raise TypeError(f"{type(self).__name__} needs auth=EntraAuth(...)")
        if requirement is not None and not isinstance(requirement, Requirement):
            raise TypeError("requirement must be an entra_mw.Requirement")
        if challenge is not None and not isinstance(challenge, Challenge):
            raise TypeError("challenge must be an entra_mw.Challenge")
        self.app = app
        self.auth = auth
        self.required = required
        self.exclude_paths = PathExclusions(exclude_paths)
        self.requirement = requirement
        self.challenge = challenge
