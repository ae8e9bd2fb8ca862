"""Cancelling and signalling runs from outside: what the CLI and the API both do, in one place.

- `cancel_governed`: the operator role, then the run's approvals withdrawn (`corral runs cancel`,
  `POST /api/v1/runs/{id}/cancel`).
- `send_signal`: refuses the signal names Corral itself uses (`approval:<id>` carries a human's
  decision, `corral.*` the engine's own), so a decision can only be made through
  `governance.approvals.decide`, which checks who may make it (`corral signal`,
  `POST /api/v1/runs/{id}/signals/{name}`).
"""

from __future__ import annotations

from typing import Any

from corral.engine import Corral
from corral.errors import InvalidInput, RunAlreadyFinished
from corral.governance.approvals import withdraw_for_run
from corral.governance.identity import authorize
from corral.store import RunRecord, SignalRecord
from corral.store.scripts import Dialect, Script


async def cancel_governed(corral: Corral, run_id: str, *, principal: str) -> tuple[RunRecord, bool]:
    """Cancel `run_id` as `principal` (who needs the operator role once the tenant has
    principals) and withdraw the approvals it and its children wait for, audited.

    Returns the run and whether this call cancelled it (False: it was already cancelled).
    Raises `RunNotFound`, `NotAuthorized`, and `RunAlreadyFinished` for a run that ended
    otherwise.
    """
    await corral.store.read_script(
        lambda d: authorize(corral.tenant, principal, "operator", action="cancel runs")
    )
    try:
        run = await corral.cancel(run_id)
    except RunAlreadyFinished:
        run = await corral.get_run(run_id)
        if run.status != "cancelled":
            raise
        return run, False
    # Approvals the run (or a child) waits for can never be used now: withdraw them.
    children = await corral.list_runs(parent_run_id=run_id)
    for cancelled in [run.run_id, *(child.run_id for child in children)]:

        def withdraw(d: Dialect, cancelled: str = cancelled) -> Script[int]:
            return withdraw_for_run(
                cancelled,
                actor=f"human:{principal}",
                reason="the run was cancelled",
                now=corral.clock.now(),
                dialect=d,
            )

        await corral.store.run_script(withdraw)
    return run, True


RESERVED_SIGNAL_PREFIXES = ("approval:", "corral.")
"""Signal names only Corral sends: approval decisions and the engine's own signals."""


async def send_signal(corral: Corral, run_id: str, name: str, data: Any) -> SignalRecord:
    """Send signal `name` to a run, unless the name is one Corral reserves for itself."""
    if name.startswith(RESERVED_SIGNAL_PREFIXES):
        raise InvalidInput(
            f"signal {name!r} is reserved for Corral: decide approvals with `corral approvals "
            "approve|reject` (or the API's approvals), cancel runs with `corral runs cancel`",
            signal=name,
        )
    return await corral.signal(run_id, name, data)


__all__ = ["RESERVED_SIGNAL_PREFIXES", "cancel_governed", "send_signal"]
