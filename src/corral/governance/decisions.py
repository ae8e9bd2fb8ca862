"""What a policy decides about: a call in its context; and what it decides.

A `Decision` is journaled (as the result of a `policy:<tool>` step) and audited; it names the
policy, its version and the rule, so anyone can see why a call was allowed, denied or sent to a
human. Nothing here depends on model text except the tool call's arguments, which conditions may
inspect; who may do what comes from the agent's definition and the run, never from the model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corral.governance.documents import ApprovalSpec, Effect


class CallContext(BaseModel):
    """One tool call (or model call: `tool` is then `model:<name>`), as policies see it."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    workflow: str
    run_id: str
    agent: str | None
    agent_scopes: tuple[str, ...] = ()
    tool: str
    tool_risk: str = "low"
    tool_scopes: tuple[str, ...] = ()
    arguments: dict[str, Any] = Field(default_factory=dict)
    budget: dict[str, float] = Field(default_factory=dict)
    """Spent so far: run_usd, run_tokens, run_tool_calls, agent_usd_today, … (see documents)."""
    now: float


class Decision(BaseModel):
    """What the policies decided about a call, and which policy, version and rule decided it."""

    model_config = ConfigDict(frozen=True)

    effect: Effect
    reason: str = ""
    policy: str | None = None
    version: int | None = None
    rule: str | None = None
    approval: ApprovalSpec | None = None
    timeout: float | None = None
    """The shortest `timeout` of the rules that matched: the call may take no longer."""

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"
