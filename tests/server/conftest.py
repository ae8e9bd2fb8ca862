"""The `api` fixture: a real server (uvicorn on 127.0.0.1) on the test's store, both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from corral.store import Store
from corral.testing import FakeClock

from .harness import ApiServer, serving
from .workflows import WORKFLOWS


@pytest.fixture
async def api(store: Store, clock: FakeClock) -> AsyncIterator[ApiServer]:
    async with serving(store, clock, workflows=WORKFLOWS) as server:
        yield server
