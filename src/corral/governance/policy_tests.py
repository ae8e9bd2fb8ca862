"""Policy test cases: given this call, expect this effect (and rule, and policy).

A team checks its policies the way it checks code: cases that name a call (the tool, the agent,
the arguments…) and the decision they expect, run against policy documents or against a
tenant's active policies. `corral policy test FILE` runs a YAML file of them (`PolicyTests`);
the API's `POST /policies/test` runs the same cases sent as JSON.

```yaml
policies: [support.yaml]     # relative to this file; absent: the tenant's active ones
cases:
  - name: large refund needs finance
    call: {agent: refunds, tool: issue_refund, args: {amount_cents: 60000}}
    expect: {effect: require_approval, rule: large-refunds-need-approval}
```
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictFloat,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from corral.governance.decisions import CallContext, Decision
from corral.governance.documents import Effect
from corral.governance.policies import PolicySet


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaseCall(_Strict):
    """The call a test case asks about (what an agent's tool loop would pass to policies)."""

    tool: str
    agent: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    agent_scopes: tuple[str, ...] = ()
    tool_scopes: tuple[str, ...] = ()
    tool_risk: str = "low"
    workflow: str = "policy-test"
    tenant: str | None = None
    """Default: the tenant whose policies are tested."""
    run_id: str = "policy-test"
    budget: dict[str, StrictFloat] = Field(default_factory=dict)
    now: dt.datetime | None = None
    """ISO 8601; default: the time of the test."""

    @field_validator("now", mode="before")
    @classmethod
    def _iso_only(cls, value: object) -> object:
        # A bare number would be read as seconds since the epoch: say a time the way people do.
        if isinstance(value, int | float):
            raise ValueError("give now as an ISO 8601 date and time (2026-03-04T12:00:00Z)")
        return value


class Expectation(_Strict):
    """The decision a case expects: its effect, and (when given) the rule and policy."""

    effect: Effect
    rule: str | None = None
    policy: str | None = None


class _OrJustTheEffect:
    """In the JSON Schema of `Case.expect`: an expectation, or just its effect (the short
    form `Case` accepts)."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        effects = list(get_args(Effect))
        return {"anyOf": [handler(core_schema), {"type": "string", "enum": effects}]}


class Case(_Strict):
    """One test case; `expect` may be just the effect (`expect: deny`)."""

    name: str
    call: CaseCall
    expect: Annotated[Expectation, _OrJustTheEffect]

    @field_validator("expect", mode="before")
    @classmethod
    def _short_form(cls, value: object) -> object:
        return {"effect": value} if isinstance(value, str) else value


class PolicyTests(_Strict):
    """A file of test cases, and the policy files they test."""

    policies: tuple[str, ...] | None = None
    """Policy files, relative to the test file; absent: the tenant's active policies."""
    cases: tuple[Case, ...] = Field(min_length=1)


@dataclass(frozen=True)
class CaseResult:
    """What the policies decided for one case, and how that differs from what it expected."""

    case: Case
    decision: Decision
    problems: list[str]
    """What differs (`effect allow (expected deny)`); empty when the case passed."""

    @property
    def passed(self) -> bool:
        return not self.problems


def call_context(call: CaseCall, *, tenant: str, now: float) -> CallContext:
    """The context policies decide on for `call` (`tenant` and `now` unless it names them)."""
    moment = call.now
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return CallContext(
        tenant=call.tenant or tenant,
        workflow=call.workflow,
        run_id=call.run_id,
        agent=call.agent,
        agent_scopes=call.agent_scopes,
        tool=call.tool,
        tool_risk=call.tool_risk,
        tool_scopes=call.tool_scopes,
        arguments=call.args,
        budget=call.budget,
        now=now if moment is None else moment.timestamp(),
    )


def case_problems(expect: Expectation, decision: Decision) -> list[str]:
    """How `decision` differs from `expect` (empty: as expected)."""
    wrong = []
    if decision.effect != expect.effect:
        wrong.append(f"effect {decision.effect} (expected {expect.effect})")
    if expect.rule is not None and decision.rule != expect.rule:
        wrong.append(f"rule {decision.rule} (expected {expect.rule})")
    if expect.policy is not None and decision.policy != expect.policy:
        wrong.append(f"policy {decision.policy} (expected {expect.policy})")
    return wrong


def run_cases(
    policy_set: PolicySet, cases: Iterable[Case], *, tenant: str, now: float
) -> list[CaseResult]:
    """Decide each case's call with `policy_set` (pure: nothing is stored or audited)."""
    results = []
    for case in cases:
        decision = policy_set.decide(call_context(case.call, tenant=tenant, now=now))
        results.append(CaseResult(case, decision, case_problems(case.expect, decision)))
    return results


__all__ = [
    "Case",
    "CaseCall",
    "CaseResult",
    "Expectation",
    "PolicyTests",
    "call_context",
    "case_problems",
    "run_cases",
]
