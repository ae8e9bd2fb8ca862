"""Fixtures of the durability suites: fleets of worker processes that never outlive a test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import effect_ledger
from .harness import Fleet


def new_fleet(folder: Path, **options: Any) -> Fleet:
    """A fleet on a fresh Corral database and a fresh effect ledger in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / "ledger.db"
    effect_ledger.create(ledger)
    return Fleet(folder, folder / "corral.db", ledger, **options)


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    """Make fleets; every process they started is killed when the test ends, pass or fail."""
    fleets: list[Fleet] = []

    def make(**options: Any) -> Fleet:
        fleet = new_fleet(tmp_path / f"fleet{len(fleets)}", **options)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()
