"""What each step changed: the agent's conversation and its memory, rebuilt from the journal.

The tool loop keeps its conversation in memory and journals only what it cannot recompute: the
model's answers and the tools' results. The conversation is therefore *rebuilt* here the way
the loop builds it:

| journal entry | message added |
| --- | --- |
| the run's input (an `AgentTask`'s thread, then its input) | the first user message |
| a model step | the assistant message (with its tool calls) |
| a tool step that finished | a tool message with the result (`Error (Type): …` on failure) |
| a tool step that waits for approval | none yet: the approved call's step, or the decision |
| a rejected approval (the signal, or the deadline) | `Error (ApprovalRejected): …` |
| a handoff | `Transferred to <agent>.` |
| a delegated child run's result | its output (or `Error (ChildRunFailed): …`) |

Two things are not journaled and cannot be shown: the feedback a refused final answer gets (the
output contract's or a reviewer's message goes back as a user message; the step that was refused
says so), and memory. There is no memory tier yet, and the shared state of parallel patterns
(`corral.agents.patterns.Namespaces`) lives in the workflow's memory, rebuilt on replay from
journaled results: a step's memory change is reported as none, with that reason.

Within one turn the loop appends tool messages in the order the model made the calls, whatever
order their steps finished in (a call that waited for approval finishes last); the rebuilt
conversation keeps that order, and each message is attributed to the step that produced it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.models.messages import Message, ToolCall
from corral.observe.journal_view import Category, RunView, StepView
from corral.store import RunRecord

NO_MEMORY = (
    "no memory is journaled: Corral has no memory tier yet, and the shared state of parallel "
    "patterns (Namespaces) lives in the workflow's memory, rebuilt from journaled results"
)
"""Why every step's memory change is empty."""

MEMORY_SHORT = "not journaled: no memory tier yet; Namespaces state stays in the workflow"

FEEDBACK_NOT_JOURNALED = (
    "this final answer was not accepted (output contract or review): the loop sent feedback "
    "as a user message, which is not journaled, and asked again"
)


_TASK_KEYS = frozenset({"input", "depth", "thread", "scopes"})
"""The fields of `corral.agents.AgentTask`, the input of an agent's own run."""


@dataclass(frozen=True)
class AgentTaskView:
    """A run's input as an agent's loop reads it: the text it starts from, the conversation it
    continues, and the scope chain of the agents above it (JSON), when the run is an agent's."""

    input: Any
    thread: list[Message]
    scopes: dict[str, Any] | None
    depth: int = 0


@dataclass(frozen=True)
class StepDiff:
    """What one step changed in its run's conversation and memory."""

    run_id: str
    seq: int
    name: str
    category: Category
    agent: str | None
    before: list[Message]
    """The conversation just before the step."""
    added: list[Message]
    """Messages the step added (the loop only appends: nothing is changed or removed)."""
    notes: list[str] = field(default_factory=list)
    """What else the step meant for the conversation (a wait, a refused answer, an edit)."""
    memory_changes: list[Any] = field(default_factory=list)
    memory_note: str = NO_MEMORY

    @property
    def after(self) -> list[Message]:
        return [*self.before, *self.added]


@dataclass(frozen=True)
class _Entry:
    seq: int
    order: tuple[int, int]
    """(turn, position): the assistant message is -1 in its turn, tool messages their call's."""
    message: Message


@dataclass
class Conversation:
    """A run's conversation rebuilt from its journal, message by message, with the step each
    message came from (seq 0: the run's input)."""

    entries: list[_Entry] = field(default_factory=list)
    notes: dict[int, list[str]] = field(default_factory=dict)

    def messages(self, *, upto: int | None = None) -> list[Message]:
        """The conversation as it stood after step `upto` (None: after the whole journal)."""
        kept = [e for e in self.entries if upto is None or e.seq <= upto]
        return [e.message for e in sorted(kept, key=lambda e: e.order)]

    def added_by(self, seq: int) -> list[Message]:
        """The messages step `seq` added, in conversation order."""
        return [e.message for e in sorted(self.entries, key=lambda e: e.order) if e.seq == seq]


def agent_task(run: RunRecord) -> AgentTaskView:
    """The run's input as an agent reads it: an `AgentTask` (`input`, `thread`, `scopes`,
    `depth`), or any other input as the text it starts from."""
    value = _decode(run.input)
    if isinstance(value, Mapping) and "input" in value and set(value) <= _TASK_KEYS:
        thread = [
            Message.model_validate(m) for m in value.get("thread") or [] if isinstance(m, Mapping)
        ]
        scopes = value.get("scopes")
        depth = value.get("depth")
        return AgentTaskView(
            input=value["input"],
            thread=thread,
            scopes=dict(scopes) if isinstance(scopes, Mapping) else None,
            depth=depth if isinstance(depth, int) else 0,
        )
    return AgentTaskView(input=value, thread=[], scopes=None)


def as_text(value: Any) -> str:
    """What a model is shown for a value (as the tool loop sends it): text as is, else JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def rebuild_conversation(view: RunView) -> Conversation:
    """Rebuild `view`'s conversation from its input and journal (see the module docstring)."""
    return _Rebuilder(view).run()


def step_diff(view: RunView, seq: int) -> StepDiff:
    """What step `seq` of `view`'s run added to the conversation (and to memory: nothing).

    Raises:
        KeyError: the run has no step `seq`.
    """
    step = next((s for s in view.steps if s.seq == seq), None)
    if step is None:
        raise KeyError(seq)
    conversation = rebuild_conversation(view)
    return StepDiff(
        run_id=view.run_id,
        seq=seq,
        name=step.name,
        category=step.category,
        agent=step.agent,
        before=conversation.messages(upto=seq - 1),
        added=conversation.added_by(seq),
        notes=list(conversation.notes.get(seq, [])),
    )


def message_json(message: Message) -> dict[str, Any]:
    """A message for `--json`: role, content, author, tool calls (arguments decoded)."""
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.author is not None:
        data["author"] = message.author
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        data["tool_calls"] = [
            {"call_id": c.call_id, "name": c.name, "arguments": _decode(c.arguments)}
            for c in message.tool_calls
        ]
    return data


def step_diff_json(diff: StepDiff) -> dict[str, Any]:
    """The JSON shape of `corral runs diff --json`."""
    return {
        "run_id": diff.run_id,
        "seq": diff.seq,
        "name": diff.name,
        "category": diff.category,
        "agent": diff.agent,
        "messages": {
            "before": len(diff.before),
            "added": [message_json(m) for m in diff.added],
            "changed": [],
            "removed": [],
        },
        "memory": {"changes": diff.memory_changes, "note": diff.memory_note},
        "notes": diff.notes,
    }


def message_lines(message: Message) -> list[str]:
    """A message as lines of text: `role (author): content`, then one line per tool call."""
    who: str = message.role
    if message.author:
        who += f" ({message.author})"
    if message.tool_call_id:
        who += f" [{message.tool_call_id}]"
    lines = [
        f"{who}: {line}" if i == 0 else f"  {line}"
        for i, line in enumerate((message.content or "").splitlines() or [""])
    ]
    for call in message.tool_calls:
        lines.append(f"  -> {call.name}({call.arguments}) [{call.call_id}]")
    return lines


def render_step_diff(diff: StepDiff, *, context: int = 3) -> str:
    """The diff as text: a header, `context` lines of the conversation before the step (` `),
    the added messages (`+`), the memory change and the notes. Unified-diff style."""
    before = [line for m in diff.before for line in message_lines(m)]
    after = [line for m in diff.after for line in message_lines(m)]
    lines = [
        f"run {diff.run_id} step {diff.seq}: {diff.name} ({diff.category}"
        + (f", agent {diff.agent}" if diff.agent else "")
        + ")",
        f"--- conversation before step {diff.seq} ({len(diff.before)} messages)",
        f"+++ conversation after step {diff.seq} ({len(diff.after)} messages)",
    ]
    hunk = list(difflib.unified_diff(before, after, lineterm="", n=context))[2:]
    if hunk:
        lines.extend(hunk)
    else:
        lines.extend(f" {line}" for line in before[-context:])
        lines.append("(no message added by this step)")
    changes = "; ".join(_json(change) for change in diff.memory_changes)
    lines.append(f"memory: {changes or 'none'} ({MEMORY_SHORT if not changes else 'journaled'})")
    lines.extend(f"note: {note}" for note in diff.notes)
    return "\n".join(lines)


# -- rebuilding ----------------------------------------------------------------------------------


@dataclass
class _Call:
    call: ToolCall
    turn: int
    position: int
    answered: bool = False
    approval_id: str | None = None


class _Rebuilder:
    """One pass over a journal, appending what the loop would have appended."""

    def __init__(self, view: RunView) -> None:
        self.view = view
        self.out = Conversation()
        self.turn = 0
        self.calls: list[_Call] = []  # the tool calls of every turn so far
        self.last_model: StepView | None = None
        self.children: list[tuple[StepView, _Call | None]] = []  # started, no result yet

    def run(self) -> Conversation:
        task = agent_task(self.view.run)
        for position, message in enumerate(task.thread):
            self._add(0, (0, position), message)
        self._add(0, (0, len(task.thread)), Message.user(as_text(task.input)))
        if not self.view.run.workflow.startswith("agent:"):
            self._note(0, "the run's input stands in for the agent's first message")
        for step in self.view.steps:
            self._step(step)
        return self.out

    def _add(self, seq: int, order: tuple[int, int], message: Message) -> None:
        self.out.entries.append(_Entry(seq, order, message))

    def _note(self, seq: int, text: str) -> None:
        self.out.notes.setdefault(seq, []).append(text)

    def _answer(self, step: StepView, pending: _Call | None, content: str) -> None:
        if pending is None:
            return
        pending.answered = True
        self._add(
            step.seq,
            (pending.turn, pending.position),
            Message.tool(pending.call.call_id, content),
        )

    def _pending(self, name: str, call_id: str | None = None) -> _Call | None:
        """The first unanswered call of the current turn with this id (or, lacking one, name)."""
        for pending in self.calls:
            if pending.answered or pending.turn != self.turn:
                continue
            if (call_id is not None and pending.call.call_id == call_id) or (
                call_id is None and pending.call.name == name
            ):
                return pending
        return None

    def _step(self, step: StepView) -> None:
        if step.category == "model":
            self._model(step)
        elif step.category == "tool":
            self._tool(step)
        elif step.category == "approval":
            self._approval(step)
        elif step.category == "wait" and step.name.startswith("approval:"):
            self._decision(step, step.result)
        elif step.category == "handoff" and step.subject:
            self._answer(
                step,
                self._pending(f"transfer_to_{step.subject}"),
                f"Transferred to {step.subject}.",
            )
        elif step.category == "child":
            self._child(step)
        elif step.category == "limit":
            self._note(step.seq, f"the loop ended: {_error_text(step.error)}")

    def _model(self, step: StepView) -> None:
        if step.status != "succeeded" or step.message is None:
            self._note(step.seq, f"the model call failed: {_error_text(step.error)}")
            return
        previous = self.last_model
        if (
            previous is not None
            and previous.message is not None
            and not previous.message.get("tool_calls")
            and previous.agent == step.agent
        ):
            self._note(previous.seq, FEEDBACK_NOT_JOURNALED)
        message = Message.model_validate(step.message)
        if message.author is None:
            message = message.model_copy(update={"author": step.agent})
        self.turn += 1
        self._add(step.seq, (self.turn, -1), message)
        self.calls.extend(
            _Call(call, self.turn, position) for position, call in enumerate(message.tool_calls)
        )
        self.last_model = step

    def _tool(self, step: StepView) -> None:
        call = step.call or {}
        call_id = call.get("call_id")
        pending = self._pending(step.subject or "", call_id if isinstance(call_id, str) else None)
        if step.status == "failed":
            error = step.error or {}
            kind, text = error.get("type"), error.get("message", "")
            self._answer(step, pending, text if kind == "ToolRetry" else f"Error ({kind}): {text}")
            return
        if step.status != "succeeded":
            self._note(step.seq, f"the tool call is {step.status}")
            return
        result = step.result if isinstance(step.result, Mapping) else {}
        if result.get("status") == "approval_required":
            reason = (step.decision or {}).get("reason") or "a policy asks for it"
            self._note(step.seq, f"the call waits for a human's approval: {reason}")
            return
        approved = call.get("approved_arguments")
        if approved is not None and approved != call.get("arguments"):
            self._note(
                step.seq,
                "the approver edited the arguments: the model asked for "
                f"{_json(call.get('arguments'))}, the call ran with {_json(approved)}",
            )
        self._answer(step, pending, as_text(result.get("value")))

    def _approval(self, step: StepView) -> None:
        result = step.result if isinstance(step.result, Mapping) else {}
        if step.name.startswith("approval.deadline:"):
            decision = result.get("decision")
            if isinstance(decision, Mapping):
                self._decision(step, decision)
            else:
                self._note(step.seq, "the approval deadline passed: escalated")
            return
        approval_id = result.get("approval_id")
        if step.name.startswith("review:"):
            self._note(step.seq, f"the final answer waits for a review ({approval_id})")
            return
        for pending in self.calls:
            if (
                pending.turn == self.turn
                and not pending.answered
                and pending.approval_id is None
                and pending.call.name == step.subject
            ):
                pending.approval_id = str(approval_id)
                break
        self._note(step.seq, f"approval {approval_id} requested")

    def _decision(self, step: StepView, decision: Any) -> None:
        if not isinstance(decision, Mapping):
            return
        approval_id = decision.get("approval_id")
        status, by, reason = (
            decision.get("status"),
            decision.get("decided_by"),
            decision.get("reason"),
        )
        self._note(
            step.seq, f"approval {approval_id} {status} by {by}" + (f": {reason}" if reason else "")
        )
        if status == "approved":
            return
        pending = next(
            (p for p in self.calls if p.approval_id == approval_id and not p.answered), None
        )
        self._answer(
            step,
            pending,
            f"Error (ApprovalRejected): the call was rejected by {by}"
            + (f": {reason}" if reason else ""),
        )

    def _child(self, step: StepView) -> None:
        if step.record.kind == "child.start":
            # Linked to its call now: delegations start in call order, and may finish in any.
            pending = self._pending(f"ask_{step.name.removeprefix('agent:')}")
            if pending is not None:
                pending.answered = True  # answered by the child's result, below
            self.children.append((step, pending))
            self._note(step.seq, f"child run {step.child_run_id} of {step.name} started")
            return
        index = next((i for i, (s, _) in enumerate(self.children) if s.name == step.name), None)
        if index is None:
            return
        start, pending = self.children.pop(index)
        if pending is not None:
            pending.answered = False
        if step.status == "failed":
            message = (step.error or {}).get("message", "")
            self._answer(
                step,
                pending,
                f"Error (ChildRunFailed): child run {start.child_run_id} of run "
                f"{self.view.run_id} did not succeed: {message}",
            )
            return
        self._answer(step, pending, as_text(step.result))


def _error_text(error: Mapping[str, Any] | None) -> str:
    if not error:
        return "(no error recorded)"
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _decode(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


__all__ = [
    "NO_MEMORY",
    "AgentTaskView",
    "Conversation",
    "StepDiff",
    "agent_task",
    "as_text",
    "message_json",
    "message_lines",
    "rebuild_conversation",
    "render_step_diff",
    "step_diff",
    "step_diff_json",
]
