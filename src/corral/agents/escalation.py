"""Escalation: an agent asks a person and waits (durably, with a deadline) for the answer.

`Agent(…, escalation=Escalation(to=["support-leads"], deadline=3600))` gives the agent an
`ask_human` tool. A call to it is an approval request (the same inbox, CLI and audit trail as
any approval): the person *approves* with their answer as the reason, or *rejects* it (the agent
is told they declined, and why). The run is unloaded while it waits, for hours if need be, and
resumes on any worker. At the deadline with no answer, the agent is told nobody answered, or the
question goes to `escalate_to`.

The other way to escalate is from inside a tool: `raise ApprovalRequired("why", approvers=[…])`
stops that call until a person decides, then makes it again with `ctx.approved_by` set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from corral.errors import AgentDefinitionError, ApprovalRequired
from corral.tools import Tool, ToolContext

ASK_HUMAN = "ask_human"


@dataclass(frozen=True)
class Escalation:
    """Who an agent's `ask_human` questions go to, and how long they may take.

    Args:
        to: Approver groups or principal names who answer.
        deadline: Seconds a question may wait; None: for ever (the run's own `timeout` still
            applies).
        escalate_to: Who gets the question when `to` has not answered by the deadline.
        escalation_deadline: Seconds the second group gets (default: `deadline`).
    """

    to: Sequence[str]
    deadline: float | None = 3600.0
    escalate_to: Sequence[str] = field(default=())
    escalation_deadline: float | None = None

    def __post_init__(self) -> None:
        if not self.to:
            raise AgentDefinitionError("Escalation(to=…) needs at least one approver group")
        if self.deadline is not None and not self.deadline > 0:
            raise AgentDefinitionError("Escalation deadline must be positive seconds or None")

    def tool(self) -> Tool:
        """The `ask_human` tool that sends questions to these people."""
        escalation = self

        async def ask_human(question: str, ctx: ToolContext) -> str:
            """Ask a person when you cannot proceed safely on your own: missing facts, a
            judgement call above your authority, or a customer asking for a human. Wait for
            their answer before acting on it.

            Args:
                question: A self-contained question with the facts the person needs.
            """
            if ctx.approved_by is None:
                raise ApprovalRequired(
                    question,
                    approvers=list(escalation.to),
                    deadline=escalation.deadline,
                    on_deadline="escalate" if escalation.escalate_to else "reject",
                    escalate_to=list(escalation.escalate_to),
                    escalation_deadline=escalation.escalation_deadline,
                )
            answer = ctx.approval_note or "(no words: they approved without a note)"
            return f"{ctx.approved_by} answered: {answer}"

        return Tool.from_function(ask_human, name=ASK_HUMAN, retry=None)


__all__ = ["ASK_HUMAN", "Escalation"]
