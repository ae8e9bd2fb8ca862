"""Kill switches: pause an agent, or a whole tenant, and no tool call of theirs starts.

`pause` commits a row (and its audit entry); every tool call checks for one as the last thing
before it starts, in the same step as the call, so once `corral pause` has returned, no tool call
of that agent starts anywhere. A paused call fails its step with `Paused`, which stops the run
(it is not reported to the model: a stop is not a problem to work around). `resume` lets new
calls start again; runs that were stopped stay stopped.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from corral.errors import Paused as Paused
from corral.governance.audit import AuditEntry, append
from corral.store.scripts import Dialect, Script, Statement

TENANT = "tenant"


class Pause(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant: str
    target: str
    """`tenant`, or `agent:<name>`."""
    paused_at: float
    paused_by: str
    reason: str


def agent_target(agent: str) -> str:
    return f"agent:{agent}"


def pause(
    tenant: str, target: str, *, actor: str, reason: str, now: float, dialect: Dialect
) -> Script[Pause]:
    """Set a kill switch (idempotent: an existing pause is kept as it was)."""
    yield Statement(
        "INSERT INTO pauses (tenant, target, paused_at, paused_by, reason) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant, target) DO NOTHING",
        (tenant, target, now, actor, reason),
    )
    yield from append(
        tenant,
        AuditEntry(kind="pause.set", actor=actor, subject=target, decision={"reason": reason}),
        at=now,
        dialect=dialect,
    )
    found = yield from active_pause(tenant, None if target == TENANT else target)
    assert found is not None
    return found


def resume(
    tenant: str, target: str, *, actor: str, reason: str, now: float, dialect: Dialect
) -> Script[bool]:
    """Clear a kill switch; False if it was not set."""
    result = yield Statement("DELETE FROM pauses WHERE tenant = ? AND target = ?", (tenant, target))
    if result.rowcount == 0:
        return False
    yield from append(
        tenant,
        AuditEntry(kind="pause.cleared", actor=actor, subject=target, decision={"reason": reason}),
        at=now,
        dialect=dialect,
    )
    return True


def active_pause(tenant: str, target: str | None) -> Script[Pause | None]:
    """The pause that stops `target` (an `agent:<name>`) in `tenant`: its own, or the tenant's."""
    targets = [TENANT] if target is None else [TENANT, target]
    marks = ", ".join("?" for _ in targets)
    result = yield Statement(
        "SELECT tenant, target, paused_at, paused_by, reason FROM pauses"
        f" WHERE tenant = ? AND target IN ({marks}) ORDER BY paused_at LIMIT 1",
        (tenant, *targets),
    )
    row = result.one()
    if row is None:
        return None
    return Pause(
        tenant=row[0], target=row[1], paused_at=float(row[2]), paused_by=row[3], reason=row[4]
    )


def list_pauses(tenant: str) -> Script[list[Pause]]:
    result = yield Statement(
        "SELECT tenant, target, paused_at, paused_by, reason FROM pauses WHERE tenant = ?"
        " ORDER BY paused_at",
        (tenant,),
    )
    return [
        Pause(tenant=r[0], target=r[1], paused_at=float(r[2]), paused_by=r[3], reason=r[4])
        for r in result.rows
    ]
