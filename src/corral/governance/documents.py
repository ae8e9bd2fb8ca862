"""The policy document: what a team writes in YAML and applies with `corral policy apply`.

```yaml
name: refunds                # unique in the tenant; each apply of a changed document is a version
description: Refunds over $500 need finance; nobody deletes orders.
default: allow               # when no rule matches: allow (scopes still apply) or deny
rules:
  - name: large-refunds-need-approval
    match:                   # every field optional; a list matches any of its items; globs allowed
      agents: [refunds]
      tools: [issue_refund]
      tenants: ["*"]
      workflows: ["*"]
    when: args.amount_cents > 50000        # CEL; optional (absent: always)
    effect: require_approval
    reason: Refunds over $500 are checked by finance.
    approval:
      approvers: [finance]                 # groups (or principal names) who may decide
      deadline: 4h                         # s, m, h, d
      on_deadline: escalate                # reject | approve | escalate
      escalate_to: [finance-leads]
  - name: no-deletes
    match: {tools: ["delete_*"]}
    effect: deny
    reason: Deleting orders is not allowed for agents.
budgets:
  - name: per-run-spend
    scope: run                              # run | agent | tenant (agent and tenant: per UTC day)
    metric: usd                             # usd | tokens | tool_calls
    limit: 2.00
    soft_limit: 1.50                        # an alert event when crossed
    on_exceed: stop                         # stop | degrade | require_approval
    degrade_to: openai:gpt-4.1-nano         # with on_exceed: degrade
    approval: {approvers: [ops], deadline: 1h, on_deadline: reject}
```

CEL conditions see: `args` (the tool call's arguments), `agent` (`name`, `scopes`), `tool`
(`name`, `risk`, `scopes`), `run` (`id`, `workflow`, `tenant`), `budget` (spent so far:
`run_usd`, `run_tokens`, `run_tool_calls`, `agent_usd_today`, `agent_tokens_today`,
`tenant_usd_today`, `tenant_tokens_today`), and `now` (a timestamp, UTC).

Unknown fields are errors (a typo must not silently weaken a policy).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Effect = Literal["allow", "deny", "require_approval"]
OnDeadline = Literal["reject", "approve", "escalate"]
BudgetScope = Literal["run", "agent", "tenant"]
BudgetMetric = Literal["usd", "tokens", "tool_calls"]
OnExceed = Literal["stop", "degrade", "require_approval"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from `90`, `90s`, `15m`, `4h`, `2d`."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (write e.g. 90s, 15m, 4h, 2d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Which calls a rule is about. An empty list (or an absent field) matches everything."""

    agents: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    workflows: tuple[str, ...] = ()


class ApprovalSpec(_Strict):
    """Who must approve, by when, and what happens at the deadline."""

    approvers: tuple[str, ...] = Field(min_length=1)
    deadline: float | None = None
    """Seconds from the request; None waits for ever."""
    on_deadline: OnDeadline = "reject"
    escalate_to: tuple[str, ...] = ()
    escalation_deadline: float | None = None
    """Seconds the escalated approvers get; defaults to `deadline`."""

    @field_validator("deadline", "escalation_deadline", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return None if value is None else parse_duration(value)  # type: ignore[arg-type]


class Rule(_Strict):
    name: str
    match: Match = Match()
    when: str | None = None
    """A CEL expression; absent means always. An error while evaluating it denies."""
    effect: Effect
    reason: str = ""
    approval: ApprovalSpec | None = None
    timeout: float | None = None
    """Seconds a matching tool call may take (`30`, `"2m"`); the shortest of every matching
    rule's, the tool's and the agent's applies. Past it the call is abandoned (`StepTimeout`)."""

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: object) -> object:
        return None if value is None else parse_duration(value)  # type: ignore[arg-type]


class BudgetLimit(_Strict):
    name: str
    scope: BudgetScope
    metric: BudgetMetric
    limit: float = Field(ge=0)
    soft_limit: float | None = Field(default=None, ge=0)
    on_exceed: OnExceed = "stop"
    degrade_to: str | None = None
    approval: ApprovalSpec | None = None
    match: Match = Match()
    """Which agents/tenants/workflows the budget applies to (tools: ignored)."""


class PolicyDocument(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    default: Literal["allow", "deny"] = "allow"
    rules: tuple[Rule, ...] = ()
    budgets: tuple[BudgetLimit, ...] = ()
