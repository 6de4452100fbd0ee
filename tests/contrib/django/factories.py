"""Module-level callables named by dotted paths in the settings tests."""

from __future__ import annotations

from entra_mw import EntraAuth, EntraConfig, Principal
from entra_mw.testing import FakeClock


def build_auth(config: EntraConfig) -> EntraAuth:
    return EntraAuth(config, clock=FakeClock(1_234_567))


def not_an_engine(config: EntraConfig) -> object:
    return config


class SyncedUser:
    """What an app's hook might return (a ``User`` it got or created); here, no database either."""

    is_authenticated = True

    def __init__(self, oid: str | None) -> None:
        self.pk = oid

    def __str__(self) -> str:
        return f"synced:{self.pk}"


def sync_user(principal: Principal) -> SyncedUser:
    return SyncedUser(principal.oid)
