"""What the agent tests share: the journal as (name, status) pairs, a run's error, approvers."""

from __future__ import annotations

import json
from typing import Any

from corral import Corral
from corral.governance import identity
from corral.store.scripts import Dialect, Script


async def steps_of(corral: Corral, run_id: str) -> list[tuple[str, str]]:
    """The run's journal as (step name, status), in step order: the whole sequence."""
    return [(record.name, record.status) for record in await corral.journal(run_id)]


async def run_error(corral: Corral, run_id: str) -> dict[str, Any]:
    run = await corral.get_run(run_id)
    assert run.error is not None, f"run {run_id} ({run.status}) has no error"
    data: dict[str, Any] = json.loads(run.error)
    return data


async def add_approver(corral: Corral, name: str, *groups: str) -> None:
    """Make `name` a principal with the approver role, in approver `groups`."""
    principal = identity.Principal(
        tenant=corral.tenant, name=name, roles=("approver",), groups=tuple(groups)
    )

    def script(dialect: Dialect) -> Script[identity.Principal]:
        return (
            yield from identity.add_principal(
                principal, actor="human:test", now=corral.clock.now(), dialect=dialect
            )
        )

    await corral.store.run_script(script)
