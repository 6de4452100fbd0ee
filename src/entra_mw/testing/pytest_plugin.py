"""pytest plugin (entry point ``entra_mw``): the ``fake_entra`` and ``fake_clock`` fixtures.

Imports nothing heavy at import time: the fixtures import :mod:`entra_mw.testing` when first used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._clock import FakeClock
    from ._fake import FakeEntra

__all__ = ["fake_clock", "fake_entra"]


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fresh :class:`~entra_mw.testing.FakeClock` (starts at 1_800_000_000; moves only on ``advance``)."""
    from ._clock import FakeClock

    return FakeClock()


@pytest.fixture
def fake_entra(fake_clock: FakeClock) -> Iterator[FakeEntra]:
    """A fresh :class:`~entra_mw.testing.FakeEntra` on ``fake_clock`` with its quickstart scenario registered.

    Example::

        def test_api(fake_entra):
            s = fake_entra.quickstart()
            token = fake_entra.app_token(s.client, resource=s.api)
    """
    from ._fake import FakeEntra

    fake = FakeEntra(clock=fake_clock)
    fake.quickstart()
    try:
        yield fake
    finally:
        fake.close()
