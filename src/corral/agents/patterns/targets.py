"""What the patterns run, and what they share: targets (agents and runnables), the workflows a
target may start, failing with a journaled error, and agents whose answer is one of some names.

A *target* is an `Agent` or anything the engine can run: a `Workflow`, or an object with the
`__corral_workflow__` hook (a `Pipeline`, a `Router`, a `GroupChat`). A pattern starts a target
as a child run, or (an agent stage of a pipeline, a speaker in a group chat) runs an agent inline.

Patterns that let a model choose among names (a router's classifier, a group chat's selector) do
not parse free text: they run a copy of the agent whose output contract is an object with one
`Literal` field. A model that answers with anything else is told so and asked again by the
contract machinery of the tool loop (`output_retries`), and the journal shows each attempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NoReturn, cast

from pydantic import BaseModel, create_model

from corral.agents.agent import Agent, AgentTask
from corral.agents.loop import raise_error
from corral.engine import ProvidesWorkflows, RunContext, Runnable, Workflow
from corral.errors import AgentDefinitionError, CorralError, StepFailed
from corral.models import Model


def target_label(target: Agent[Any] | Runnable) -> str:
    """How a target is named in messages: an agent's name, else its workflow's name."""
    if isinstance(target, Agent):
        return target.name
    if isinstance(target, Workflow):
        return target.name
    return target.__corral_workflow__().name


def check_target(target: Any, *, where: str) -> None:
    """Raise `AgentDefinitionError` unless `target` can run as a child run."""
    if not isinstance(target, Agent | Workflow | ProvidesWorkflows):
        raise AgentDefinitionError(
            f"{where} is a {type(target).__name__}, not an Agent, a Workflow or a pattern "
            "(something with __corral_workflow__)",
            where=where,
        )


def child_input(target: Agent[Any] | Runnable, value: Any) -> Any:
    """The input of a child run of `target` for `value` (an agent's run takes an `AgentTask`)."""
    if isinstance(target, Agent) and not isinstance(value, AgentTask):
        return AgentTask(input=value)
    return value


def workflows_of(targets: Iterable[Agent[Any] | Runnable]) -> list[Workflow[Any, Any]]:
    """Every workflow the targets may run as: their own and those they may start, once each."""
    found: dict[int, Workflow[Any, Any]] = {}
    for target in targets:
        if isinstance(target, Workflow):
            found.setdefault(id(target), target)
        else:
            for wf in target.__corral_workflows__():
                found.setdefault(id(wf), wf)
    return list(found.values())


def reachable_workflows(agent: Agent[Any]) -> list[Workflow[Any, Any]]:
    """The workflows an agent run inline may start: those of the agents it may reach, not its
    own (an agent run inline is not a run of its own)."""
    return [other.workflow for other in agent.reachable() if other is not agent]


async def fail(ctx: RunContext, error: CorralError, *, name: str) -> NoReturn:
    """Journal `error` as a failed step called `name`, then raise it: the journal shows why the
    pattern stopped, and a replay stops the same way."""
    with contextlib.suppress(StepFailed):
        await ctx.step(raise_error, error, name=name)
    raise error


def choice_agent(
    agent: Agent[Any], *, field: str, names: Sequence[str], what: str, described: str
) -> Agent[Any]:
    """A copy of `agent` whose answer must be `{"<field>": "<one of names>"}`.

    The copy keeps the agent's name (its model steps read `model:<name>`, and scripted rules
    keyed by name still apply), tools, turn and retry limits, and calls the agent's own model
    client; its instructions gain a line listing the choices. Handoffs and delegation are left
    out: the answer must come from this agent, and be a choice.
    """
    if not names:
        raise AgentDefinitionError(f"agent {agent.name!r} has no {what} to choose from")
    choice = cast(Any, Literal)[tuple(names)]
    fields: dict[str, Any] = {field: (choice, ...)}
    output_type: type[BaseModel] = create_model(
        f"{field.title()}Choice", __doc__=f"The {what} chosen.", **fields
    )
    note = f'Answer with the {what}, as JSON {{"{field}": "<name>"}}, one of:\n{described}'
    instructions = f"{agent.instructions}\n\n{note}" if agent.instructions else note
    return _Chooser(
        agent,
        instructions=instructions,
        tools=agent.tools,
        output_type=output_type,
        output_retries=agent.output_retries,
        max_turns=agent.max_turns,
        description=agent.description,
        version=agent.version,
    )


class _Chooser(Agent[Any]):
    """An agent's copy that calls the original's model (one client, closed with the original)."""

    def __init__(self, original: Agent[Any], **options: Any) -> None:
        super().__init__(original.name, model=original.model_spec, **options)
        self._original = original

    def model(self) -> Model:
        return self._original.model()


def choices_text(targets: dict[str, Any]) -> str:
    """One line per choice: `- name: description` (an agent's description when there is one)."""
    lines = []
    for name, target in targets.items():
        description = target.description if isinstance(target, Agent) else ""
        lines.append(f"- {name}: {description}" if description else f"- {name}")
    return "\n".join(lines)
