"""What the agent tests share: the journal as (name, status) pairs, and a run's error."""

from __future__ import annotations

import json
from typing import Any

from corral import Corral


async def steps_of(corral: Corral, run_id: str) -> list[tuple[str, str]]:
    """The run's journal as (step name, status), in step order: the whole sequence."""
    return [(record.name, record.status) for record in await corral.journal(run_id)]


async def run_error(corral: Corral, run_id: str) -> dict[str, Any]:
    run = await corral.get_run(run_id)
    assert run.error is not None, f"run {run_id} ({run.status}) has no error"
    data: dict[str, Any] = json.loads(run.error)
    return data
