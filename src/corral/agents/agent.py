"""The agent: a name, a model, instructions, tools, a contract, and the agents it works with.

```python
triage = Agent(
    "triage",
    instructions="Decide which team handles the ticket.",
    tools=[lookup_order],
    output_type=Triage,
    handoffs=[refunds],         # may pass the conversation on
    delegates=[policy_checker], # may ask for sub-tasks, each a child run
)

@corral.workflow
async def handle(ctx: RunContext, ticket: str) -> Triage:
    result = await triage.run(ctx, ticket)
    return result.output
```

An agent is also a workflow of its own (`agent:<name>`), so it can be started as a run
(`corral.start(triage, "…")`, `corral run mymodule:triage --input …`) and delegated to as a
child run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, Union

from pydantic import BaseModel, Field
from typing_extensions import TypeVar

from corral.agents.contracts import Check, OutputContract
from corral.agents.escalation import Escalation
from corral.engine import RunContext, Workflow
from corral.errors import AgentDefinitionError
from corral.governance.identity import ScopeChain
from corral.models import Message, Model, Usage, resolve_model
from corral.reliability import BreakerConfig, RetryPolicy
from corral.tools import Tool, Toolset

if TYPE_CHECKING:
    from corral.agents.events import Listener

DEFAULT_RETRY = RetryPolicy()
"""Agents retry passing failures by default: 3 attempts, 1 s then 2 s apart (with jitter)."""

O = TypeVar("O", default=Any)
"""The output type: `Agent(…, output_type=Verdict)` is an `Agent[Verdict]`."""


class AgentTask(BaseModel):
    """The input of an agent's own run: what to do, and how deep in a delegation chain it is."""

    input: Any
    depth: int = 0
    thread: list[Message] = Field(default_factory=list)
    """Conversation so far, when a run continues one (a handoff across runs, a group chat)."""
    scopes: ScopeChain | None = None
    """The scope chain of the agents above this run: it gets at most what they had."""


class AgentResult(BaseModel, Generic[O]):
    """What an agent's loop produced: the output, and how it got there."""

    output: O
    agent: str
    """The agent that gave the final answer (after handoffs, not always the one called)."""
    messages: list[Message]
    usage: Usage
    turns: int
    """Model calls made (including calls whose answers were refused by the contract)."""
    models: list[str] = Field(default_factory=list)


class Agent(Generic[O]):
    """An LLM agent.

    Args:
        name: Unique among the agents it works with; letters, digits, `_` and `-`.
        instructions: The system prompt.
        model: `provider:model`, a `Model`, or None for the configured default (the scripted
            model when nothing is configured).
        fallback_models: Models to try, in order, when a call to the one before fails
            (`ModelCallFailed`: an outage, a rate limit the SDK's retries did not outlast, a
            malformed answer): another provider, or a cheaper tier.
        tools: Tools (`@tool` functions) and toolsets (MCP servers).
        output_type: A type the final answer must validate as (a pydantic model, `int`, …);
            None for free text.
        checks: Success checks on the output, each returning True/None, False or a message.
        output_retries: How many times a refused answer is sent back before `OutputInvalid`.
        max_turns: Model calls allowed in one run of the loop before `TurnLimitExceeded`.
        max_identical_calls: How often the same tool call (same arguments) may be made in one
            run of the loop; one more ends it with `RepeatedToolCall`. None: no limit.
        handoffs: Agents this one may hand the conversation to (`transfer_to_<name>` tools).
        delegates: Agents this one may give sub-tasks to (`ask_<name>` tools); each runs as a
            child run with its own journal, in parallel when the model asks for several.
        max_depth: How deep delegation may nest below a run of this agent.
        scopes: What the agent may do: every scope a tool needs must be granted here (`*`
            globs allowed: `payments:*`). Default: none, so only tools that need no scope.
        review: Asks a human to review the final output when it returns a reason (e.g. low
            confidence); None or an empty string lets the output through. The run waits
            durably; the reviewer approves (optionally editing the output) or rejects (the
            model is told why and tries again, within `output_retries`).
        reviewers: The approver groups (or principal names) who review outputs.
        review_deadline: Seconds a review may take before it counts as rejected.
        retry: How failed model and tool calls are retried (`corral.reliability.RetryPolicy`):
            passing failures only (timeouts, 5xx, 429 after its `Retry-After`, an open
            circuit), with backoff as durable timers, under the run's and each dependency's
            retry budget. A tool's own `retry` overrides it. None: no retries.
        model_timeout: Seconds one model call may take before it is abandoned (`StepTimeout`),
            and the next model in the chain is tried.
        tool_timeout: Seconds one tool call may take (unless the tool sets its own `timeout`).
        timeout: Seconds a run of this agent (as its own workflow) may take in all, waits for
            humans included: past it, the run fails with `RunDeadlineExceeded`.
        max_steps: Model and tool calls allowed in one run of the loop before
            `StepLimitExceeded`. None: bounded by `max_turns` only.
        breaker: The circuit breaker settings for this agent's models and tools (the first
            agent to use a dependency in a worker sets its breaker). None: the defaults.
        escalation: Gives the agent an `ask_human` tool: a question to the named people,
            answered through the approvals inbox, with a deadline; the run waits durably.
        description: What the agent does, as other agents' models see it.
        version: The version of its workflow.
    """

    def __init__(
        self,
        name: str,
        *,
        instructions: str = "",
        model: str | Model | None = None,
        fallback_models: Sequence[str | Model] = (),
        tools: Sequence[Tool | Toolset] = (),
        output_type: type[O] | Any = None,
        checks: Sequence[Check] = (),
        output_retries: int = 2,
        max_turns: int = 10,
        max_identical_calls: int | None = 3,
        handoffs: Sequence[Agent[Any]] = (),
        delegates: Sequence[Agent[Any]] = (),
        max_depth: int = 3,
        scopes: Sequence[str] = (),
        review: Callable[[O], str | None] | None = None,
        reviewers: Sequence[str] = (),
        review_deadline: float | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        model_timeout: float | None = 120.0,
        tool_timeout: float | None = 60.0,
        timeout: float | None = None,
        max_steps: int | None = None,
        breaker: BreakerConfig | None = None,
        escalation: Escalation | None = None,
        description: str = "",
        version: str = "1",
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,48}", name):
            raise AgentDefinitionError(
                f"agent name {name!r} must be 1-48 letters, digits, '_' or '-'", agent=name
            )
        if max_turns < 1 or output_retries < 0 or max_depth < 0:
            raise AgentDefinitionError(
                f"agent {name!r}: max_turns must be >= 1, output_retries and max_depth >= 0",
                agent=name,
            )
        for option, value in (
            ("model_timeout", model_timeout),
            ("tool_timeout", tool_timeout),
            ("timeout", timeout),
            ("max_steps", max_steps),
        ):
            if value is not None and not value > 0:
                raise AgentDefinitionError(
                    f"agent {name!r}: {option} must be a positive number (or None), not {value!r}",
                    agent=name,
                )
        self.name = name
        self.instructions = instructions
        self.model_spec = model
        self.escalation = escalation
        self.tools = list(tools)
        if escalation is not None:
            self.tools.append(escalation.tool())
        self.retry = retry
        self.model_timeout = model_timeout
        self.tool_timeout = tool_timeout
        self.timeout = timeout
        self.max_steps = max_steps
        self.breaker = breaker
        self.contract = OutputContract(output_type, checks)
        self.output_type = output_type
        self.output_retries = output_retries
        self.max_turns = max_turns
        self.max_identical_calls = max_identical_calls
        self.handoffs = list(handoffs)
        self.delegates = list(delegates)
        self.max_depth = max_depth
        self.scopes = tuple(scopes)
        if review is not None and not reviewers:
            raise AgentDefinitionError(
                f"agent {name!r} has a review check but no reviewers", agent=name
            )
        self.review = review
        self.reviewers = tuple(reviewers)
        self.review_deadline = review_deadline
        self.description = description or instructions.split("\n")[0][:200]
        self.version = version
        self._model: Model | None = model if isinstance(model, Model) else None
        self.fallback_specs = tuple(fallback_models)
        self._fallbacks: list[Model] | None = None
        self._workflow: Workflow[Any, Any] | None = None
        self._check_names()

    def __repr__(self) -> str:
        return f"<Agent {self.name}>"

    # -- running -------------------------------------------------------------------------------

    async def run(
        self,
        ctx: RunContext,
        input: Any,
        *,
        thread: Sequence[Message] = (),
        depth: int = 0,
        listener: Listener | None = None,
        scopes: ScopeChain | None = None,
    ) -> AgentResult[O]:
        """Run the tool loop inside a workflow: model step, tool steps, … until a final answer.

        Every model call and tool call is a journaled step, so a resumed run repeats none that
        finished. `input` is text, or a value that is sent to the model as JSON. `thread` is
        the conversation so far. Raises `TurnLimitExceeded`, `OutputInvalid` or `StepFailed`
        (a model call that failed), each also recorded in the journal.
        """
        from corral.agents.loop import ToolLoop

        loop = ToolLoop(ctx, self, depth=depth, listener=listener, chain=scopes)
        return await loop.run(input, thread)

    def model(self) -> Model:
        """The model this agent calls (resolved on first use: a missing key fails the step)."""
        if self._model is None:
            self._model = resolve_model(self.model_spec)
        return self._model

    def models(self) -> list[Model]:
        """The model, then its fallbacks, in the order they are tried."""
        if self._fallbacks is None:
            self._fallbacks = [resolve_model(spec) for spec in self.fallback_specs]
        return [self.model(), *self._fallbacks]

    async def aclose(self) -> None:
        """Close the model client this agent opened from a string (not one it was given), and
        its toolsets' connections (an MCP server's process or session; they reopen on use)."""
        if self._model is not None and not isinstance(self.model_spec, Model):
            model, self._model = self._model, None
            await model.aclose()
        opened = [
            m
            for m, spec in zip(self._fallbacks or [], self.fallback_specs, strict=False)
            if not isinstance(spec, Model)
        ]
        self._fallbacks = None
        for fallback in opened:
            await fallback.aclose()
        for item in self.tools:
            close = getattr(item, "aclose", None)
            if not isinstance(item, Tool) and close is not None:
                await close()

    # -- as a workflow -------------------------------------------------------------------------

    @property
    def workflow(self) -> Workflow[Any, Any]:
        """The workflow that runs this agent on its own: input text (or an `AgentTask`)."""
        if self._workflow is None:
            agent = self

            async def run_agent(ctx: RunContext, task: AgentTask | str) -> Any:
                if not isinstance(task, AgentTask):
                    task = AgentTask(input=task)
                result = await agent.run(
                    ctx, task.input, thread=task.thread, depth=task.depth, scopes=task.scopes
                )
                return result.output

            output_type = self.output_type if self.output_type is not None else str
            self._workflow = Workflow(
                fn=run_agent,
                name=f"agent:{self.name}",
                version=self.version,
                input_type=Union[AgentTask, str],  # noqa: UP007 - a runtime type for pydantic
                output_type=output_type,
                timeout=self.timeout,
            )
        return self._workflow

    def __corral_workflow__(self) -> Workflow[Any, Any]:
        return self.workflow

    def __corral_workflows__(self) -> Iterable[Workflow[Any, Any]]:
        return [agent.workflow for agent in self.reachable()]

    def reachable(self) -> Iterator[Agent[Any]]:
        """This agent and every agent it may hand off or delegate to, transitively, once each."""
        seen: set[int] = set()
        pending: list[Agent[Any]] = [self]
        while pending:
            agent = pending.pop()
            if id(agent) in seen:
                continue
            seen.add(id(agent))
            yield agent
            pending.extend(agent.handoffs)
            pending.extend(agent.delegates)

    def _check_names(self) -> None:
        names: dict[str, str] = {}
        for name in self.tool_names():
            if name in names:
                raise AgentDefinitionError(
                    f"agent {self.name!r} has two tools named {name!r}", agent=self.name, tool=name
                )
            names[name] = name

    def tool_names(self) -> list[str]:
        """Names of the Python tools, handoff and delegation tools (toolsets list theirs later)."""
        names = [t.name for t in self.tools if isinstance(t, Tool)]
        names += [f"transfer_to_{a.name}" for a in self.handoffs]
        names += [f"ask_{a.name}" for a in self.delegates]
        return names
