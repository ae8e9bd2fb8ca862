"""The governor: what a call must pass before it starts, in the order it is checked.

For a tool call, inside the call's own journaled step:

1. **scopes** — every scope the tool needs must be allowed by the agent's scope chain (default
   deny; a child never exceeds its parent). A missing scope is a deny decision (rule `scopes`).
2. **policies** — the tenant's active policies decide allow, deny or require_approval (fail
   closed), seeing the arguments, the agent, the run, the budget spent and the time.
3. **kill switch** — a pause of the agent or the tenant stops the run.
4. **budgets** — the call is reserved against every budget that applies before it starts and
   settled after; a reservation that would exceed a limit is refused.

Decisions other than the default allow are audited (kind `policy.decision`) in the same
transaction as the tool step's journaled outcome, which holds the decision (its result, or its
error): the record and the journal commit together. Every decision, default or not, is in the
journal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.engine import commit_with_step, current_step
from corral.engine.clock import Clock
from corral.governance import budgets
from corral.governance.approvals import arguments_hash
from corral.governance.audit import AuditEntry, append
from corral.governance.decisions import CallContext, Decision
from corral.governance.documents import BudgetLimit, BudgetMetric
from corral.governance.identity import ScopeChain
from corral.governance.pauses import Paused, active_pause, agent_target
from corral.governance.policies import PolicyError
from corral.governance.policy_store import load_policy_set
from corral.store import Store
from corral.store.scripts import Dialect, Script


@dataclass(frozen=True)
class Subject:
    """Who is calling, from where: what every check is about (never model text)."""

    tenant: str
    workflow: str
    run_id: str
    agent: str | None
    chain: ScopeChain = field(default_factory=ScopeChain)


@dataclass(frozen=True)
class Reserved:
    """A granted reservation (settle it after the call), or a refusal naming the budget."""

    reservation_id: str
    granted: bool
    limit: BudgetLimit | None = None
    """The budget that refused (None when granted)."""
    policy: str | None = None
    used: float = 0.0
    active: bool = True
    """False when no budget applies: nothing was reserved and nothing needs settling."""


class Governor:
    """Runs the checks against a store; one per worker is enough (it holds no run state)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # -- decisions -------------------------------------------------------------------------------

    async def decide(
        self,
        subject: Subject,
        *,
        tool: str,
        tool_scopes: Sequence[str],
        tool_risk: str,
        arguments: Mapping[str, Any],
        step_key: str,
    ) -> Decision:
        """Scopes, then policies: the decision about one call, audited unless a default allow."""
        now = self.clock.now()
        missing = subject.chain.missing(tool_scopes)
        if missing:
            decision = Decision(
                effect="deny",
                rule="scopes",
                reason=f"agent {subject.agent!r} lacks the scope(s) {', '.join(missing)} that "
                f"tool {tool!r} needs",
            )
        else:
            decision = await self._policy_decision(
                subject, tool, tool_scopes, tool_risk, arguments, now
            )
        if decision.rule is not None or decision.effect != "allow":
            entry = AuditEntry(
                kind="policy.decision",
                actor=f"agent:{subject.agent}" if subject.agent else "corral",
                subject=f"run:{subject.run_id}:{step_key.rsplit(':', 1)[-1]}",
                decision={
                    "tool": tool,
                    "arguments_hash": arguments_hash(arguments),
                    **decision.model_dump(mode="json", exclude={"approval"}),
                },
                payload_ref=f"run:{subject.run_id}:{step_key.rsplit(':', 1)[-1]}",
                dedupe_key=f"policy.decision:{step_key}",
            )

            def record(d: Dialect) -> Script[int]:
                return _append(subject.tenant, entry, now=now, dialect=d)

            if current_step() is not None:
                # Audited in the transaction that journals the step's outcome, which holds
                # this decision (its result, or its error): both commit, or neither.
                commit_with_step(record)
            else:
                await self.store.run_script(record)
        return decision

    async def _policy_decision(
        self,
        subject: Subject,
        tool: str,
        tool_scopes: Sequence[str],
        tool_risk: str,
        arguments: Mapping[str, Any],
        now: float,
    ) -> Decision:
        try:
            policy_set = await load_policy_set(self.store, subject.tenant)
        except PolicyError as exc:  # a stored policy that no longer parses: fail closed
            return Decision(
                effect="deny",
                rule="policy-load",
                reason="the tenant's policies could not be loaded, so nothing is allowed: "
                f"{exc.message}",
            )
        spent: dict[str, float] = {}
        if not policy_set.empty:
            spent = await self.store.read_script(
                lambda d: budgets.spent(
                    tenant=subject.tenant, run_id=subject.run_id, agent=subject.agent, now=now
                )
            )
        return policy_set.decide(
            CallContext(
                tenant=subject.tenant,
                workflow=subject.workflow,
                run_id=subject.run_id,
                agent=subject.agent,
                agent_scopes=subject.chain.effective,
                tool=tool,
                tool_risk=tool_risk,
                tool_scopes=tuple(tool_scopes),
                arguments=dict(arguments),
                budget=spent,
                now=now,
            )
        )

    async def check_not_paused(self, subject: Subject) -> None:
        """Raise `Paused` if the agent or its tenant is paused (the last check before a call)."""
        target = agent_target(subject.agent) if subject.agent else None
        found = await self.store.read_script(lambda d: active_pause(subject.tenant, target))
        if found is not None:
            what = "tenant" if found.target == "tenant" else found.target
            raise Paused(
                f"{what} of tenant {subject.tenant!r} is paused by {found.paused_by} "
                f"({found.reason}): the call did not start",
                tenant=subject.tenant,
                target=found.target,
                paused_by=found.paused_by,
                run_id=subject.run_id,
            )

    # -- budgets ---------------------------------------------------------------------------------

    async def reserve(
        self,
        subject: Subject,
        *,
        reservation_id: str,
        amounts: Mapping[BudgetMetric, float],
        tool: str,
    ) -> Reserved:
        """Reserve `amounts` (per metric) against every budget that applies to this call."""
        now = self.clock.now()
        policy_set = await load_policy_set(self.store, subject.tenant)
        applicable = policy_set.budgets_for(
            CallContext(
                tenant=subject.tenant,
                workflow=subject.workflow,
                run_id=subject.run_id,
                agent=subject.agent,
                tool=tool,
                now=now,
            )
        )
        if not applicable:
            return Reserved(reservation_id, granted=True, active=False)
        by_name = {limit.name: (limit, policy) for limit, policy, _version in applicable}
        limits = budgets.limits_for(
            [limit for limit, _, _ in applicable],
            run_id=subject.run_id,
            agent=subject.agent,
            now=now,
        )
        wanted = self._amounts(subject, amounts, now)
        outcome = await self.store.run_script(
            lambda d: budgets.reserve(
                tenant=subject.tenant,
                reservation_id=reservation_id,
                amounts=wanted,
                limits=limits,
                now=now,
                dialect=d,
            )
        )
        if outcome.granted:
            return Reserved(reservation_id, granted=True)
        breach = outcome.exceeded[0]
        limit, policy = by_name[breach.budget]
        return Reserved(reservation_id, granted=False, limit=limit, policy=policy, used=breach.used)

    async def settle(
        self, subject: Subject, reserved: Reserved, actual: Mapping[BudgetMetric, float]
    ) -> None:
        """Replace the reservation's estimate with what the call actually used.

        Inside a step, the settlement commits with the step's outcome (one transaction fewer,
        and a call whose outcome is not journaled stays reserved until its retry settles it).
        """
        if not reserved.active or not reserved.granted:
            return
        now = self.clock.now()
        used = self._amounts(subject, actual, now)

        def settlement(d: Dialect) -> Script[None]:
            return budgets.settle(
                reservation_id=reserved.reservation_id, actual=used, now=now, dialect=d
            )

        if current_step() is not None:
            commit_with_step(settlement)
        else:
            await self.store.run_script(settlement)

    @staticmethod
    def _amounts(
        subject: Subject, amounts: Mapping[BudgetMetric, float], now: float
    ) -> list[budgets.Amount]:
        return budgets.call_amounts(
            run_id=subject.run_id,
            agent=subject.agent,
            now=now,
            tokens=amounts.get("tokens", 0.0),
            usd=amounts.get("usd", 0.0),
            tool_calls=amounts.get("tool_calls", 0.0),
        )


def _append(tenant: str, entry: AuditEntry, *, now: float, dialect: Dialect) -> Script[int]:
    return (yield from append(tenant, entry, at=now, dialect=dialect))
