"""What a tool knows about the call it serves: the run, the step, and the idempotency key."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Given to a tool that declares a parameter annotated `ToolContext`.

    `idempotency_key` is the same on every attempt of this call (after a crash the call may be
    made again): pass it to the system the tool changes, so that system can drop the duplicate.
    """

    run_id: str
    step_seq: int
    idempotency_key: str
    tool_name: str
    agent: str | None = None
    call_id: str | None = None
    redelivered: bool = False
    """True when an earlier attempt of this very call may already have had its effect."""
    approved_by: str | None = None
    """Who approved this call, when it needed approval (a policy's, or the tool's own request
    for review: a tool that raised `ApprovalRequired` is called again with this set)."""
    approval_note: str | None = None
    """What the approver wrote with the decision (the human's answer, for `ask_human`)."""
