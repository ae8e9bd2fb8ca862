"""The tool loop: model step → tool steps (in parallel) → model step … until a final answer.

Every model call and every tool call is a journaled step, numbered when it is called, so a run
resumed after a crash replays the finished ones from the journal and makes none of them again.
What the loop decides between steps (which tool a call names, whether an answer satisfies the
contract, whether to hand off) is computed from journaled responses only, so it decides the same
way on every replay.

Problems the model can fix go back to the model as the tool call's result, journaled as a failed
step: an unknown tool, arguments that are not JSON or fail the schema, a tool that raised, a
delegation too deep. An answer that fails the contract goes back as a user message. Bounds
(`max_turns`, `output_retries`) turn a model that never recovers into a clear, journaled error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import jsonschema
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from corral.agents.agent import Agent, AgentResult, AgentTask
from corral.agents.contracts import Violation
from corral.agents.events import AgentEvent, Listener, agent_events
from corral.agents.governed import Governed, ToolOutcome
from corral.agents.reliability import CallGuard, retry_rule, tool_dependency, with_fallback_notes
from corral.engine import current_step
from corral.errors import (
    AgentDefinitionError,
    ApprovalRequired,
    ChildRunFailed,
    CircuitOpen,
    CorralError,
    DepthLimitExceeded,
    ModelCallFailed,
    NotSerializable,
    OutputInvalid,
    RepeatedToolCall,
    SignalTimeout,
    StepFailed,
    StepLimitExceeded,
    StepTimeout,
    ToolArgumentsInvalid,
    TurnLimitExceeded,
    UnknownTool,
)
from corral.governance.approvals import (
    ApprovalDecision,
    ApprovalRequest,
    DeadlineOutcome,
    deadline_passed,
    request_approval,
    signal_name,
)
from corral.governance.budgets import BudgetExceeded
from corral.governance.decisions import Decision
from corral.governance.documents import ApprovalSpec
from corral.governance.identity import ScopeChain
from corral.governance.pauses import Paused
from corral.models import (
    Completed,
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from corral.tools import Tool, ToolContext, ToolDefinition, Toolset, parse_arguments

if TYPE_CHECKING:
    from corral.engine import RunContext

log = logging.getLogger(__name__)

EntryKind = Literal["tool", "toolset", "handoff", "delegate"]


@dataclass(frozen=True)
class _Entry:
    """A tool as the current agent offers it to the model, and how to carry out a call."""

    spec: ToolSpec
    kind: EntryKind
    tool: Tool | None = None
    toolset: Toolset | None = None
    agent: Agent[Any] | None = None
    at_most_once: bool = False


class ToolLoop:
    """One run of an agent's loop inside a workflow (see `Agent.run`)."""

    def __init__(
        self,
        ctx: RunContext,
        agent: Agent[Any],
        *,
        depth: int,
        listener: Listener | None,
        chain: ScopeChain | None = None,
    ) -> None:
        self.ctx = ctx
        self.agent = agent
        self.depth = depth
        self.listener = listener
        # What this run may do: the scopes of every agent above it, then its own.
        self.chain = (chain or ScopeChain()).extend(agent.scopes)
        self.governed = Governed.of(ctx, agent.name, self.chain)
        self.steps = 0

    async def run(self, input: Any, thread: Sequence[Message]) -> AgentResult[Any]:
        messages = [*thread, Message.user(as_text(input))]
        current = self.agent
        catalog = await self._catalog(current)
        turns = 0
        refusals = 0
        usage = Usage(requests=0)
        models: list[str] = []
        repeats: dict[tuple[str, str, str], int] = {}
        while True:
            if turns >= current.max_turns:
                await self._fail(
                    current,
                    TurnLimitExceeded(
                        f"agent {current.name!r} made {turns} model calls (max_turns="
                        f"{current.max_turns}) without a final answer in run {self.ctx.run_id}",
                        agent=current.name,
                        run_id=self.ctx.run_id,
                        max_turns=current.max_turns,
                    ),
                )
            turns += 1
            await self._count_steps(current, 1)
            request = ModelRequest(
                instructions=current.instructions,
                messages=list(messages),
                tools=[entry.spec for entry in catalog.values()],
                output_schema=current.contract.json_schema(),
                agent=current.name,
            )
            try:
                response = await self.ctx.step(
                    call_model,
                    current,
                    request,
                    self._listener(),
                    self.governed,
                    self._guard(current),
                    name=f"model:{current.name}",
                    retry=retry_rule(current.retry, self.ctx.store, self.ctx.clock),
                )
            except StepFailed as exc:
                raise _fatal(exc) or exc from None
            usage = usage + response.usage
            if response.model not in models:
                models.append(response.model)
            message = response.message.model_copy(update={"author": current.name})
            messages.append(message)
            if not message.tool_calls:
                output, violation = current.contract.parse(message.content)
                if violation is None and current.review is not None:
                    output, violation = await self._review(current, output)
                if violation is None:
                    self._publish(current, "final", detail=message.content, usage=usage)
                    return AgentResult(
                        output=output,
                        agent=current.name,
                        messages=messages,
                        usage=usage,
                        turns=turns,
                        models=models,
                    )
                if refusals >= current.output_retries:
                    await self._fail(
                        current,
                        OutputInvalid(
                            f"agent {current.name!r}: the output failed {violation.against} "
                            f"after {refusals + 1} attempt(s): {violation.problem}",
                            agent=current.name,
                            run_id=self.ctx.run_id,
                            schema=current.contract.schema_name,
                            violation=violation.problem,
                        ),
                    )
                refusals += 1
                messages.append(Message.user(current.contract.feedback(violation)))
                continue
            await self._stop_runaways(current, message.tool_calls, repeats)
            await self._count_steps(current, len(message.tool_calls))
            outcomes = list(
                await asyncio.gather(
                    *(self._dispatch(catalog, current, call) for call in message.tool_calls)
                )
            )
            for outcome in outcomes:
                if outcome.fatal is not None:
                    raise outcome.fatal
            await self._settle_approvals(catalog, current, message.tool_calls, outcomes)
            handoff: Agent[Any] | None = None
            for call, outcome in zip(message.tool_calls, outcomes, strict=True):
                messages.append(Message.tool(call.call_id, outcome.content))
                handoff = handoff or outcome.handoff
            if handoff is not None:
                current = handoff
                # A handoff is bounded like a child: the target gets at most what the chain had.
                self.chain = self.chain.extend(current.scopes)
                self.governed = Governed.of(self.ctx, current.name, self.chain)
                catalog = await self._catalog(current)

    async def _count_steps(self, agent: Agent[Any], more: int) -> None:
        """Count the model and tool calls this loop makes; past the agent's `max_steps`, stop."""
        self.steps += more
        limit = agent.max_steps
        if limit is not None and self.steps > limit:
            await self._fail(
                agent,
                StepLimitExceeded(
                    f"agent {agent.name!r} would take step {self.steps} (max_steps={limit}) "
                    f"without a final answer in run {self.ctx.run_id}: stopped as a runaway",
                    agent=agent.name,
                    run_id=self.ctx.run_id,
                    max_steps=limit,
                ),
            )

    def _guard(self, agent: Agent[Any]) -> CallGuard:
        return CallGuard.of(self.ctx.store, self.ctx.clock, agent.breaker)

    def _tool_retry(self, agent: Agent[Any], name: str, own: Any) -> Any:
        policy = own if own is not None else agent.retry
        return retry_rule(policy, self.ctx.store, self.ctx.clock, tool_dependency(name))

    async def _stop_runaways(
        self,
        agent: Agent[Any],
        calls: Sequence[ToolCall],
        repeats: dict[tuple[str, str, str], int],
    ) -> None:
        """Count identical calls (same agent, tool and arguments); one past the agent's
        `max_identical_calls` ends the loop: a model repeating itself is not making progress."""
        limit = agent.max_identical_calls
        if limit is None:
            return
        for call in calls:
            key = (agent.name, call.name, _canonical_arguments(call.arguments))
            repeats[key] = repeats.get(key, 0) + 1
            if repeats[key] > limit:
                await self._fail(
                    agent,
                    RepeatedToolCall(
                        f"agent {agent.name!r} called {call.name!r} with the same arguments "
                        f"{repeats[key]} times (max_identical_calls={limit}) in run "
                        f"{self.ctx.run_id}: stopped as a runaway loop",
                        agent=agent.name,
                        tool=call.name,
                        run_id=self.ctx.run_id,
                        max_identical_calls=limit,
                    ),
                )

    # -- tools offered ---------------------------------------------------------------------------

    async def _catalog(self, agent: Agent[Any]) -> dict[str, _Entry]:
        entries: list[_Entry] = []
        for item in agent.tools:
            if isinstance(item, Tool):
                entries.append(
                    _Entry(
                        item.definition,
                        "tool",
                        tool=item,
                        at_most_once=item.definition.at_most_once,
                    )
                )
            else:
                definitions = await self.ctx.step(list_tools, item, name=f"tools.list:{item.name}")
                entries.extend(
                    _Entry(d, "toolset", toolset=item, at_most_once=d.at_most_once)
                    for d in definitions
                )
        for target in agent.handoffs:
            spec = ToolSpec(
                name=f"transfer_to_{target.name}",
                description=f"Hand the conversation over to {target.name}: {target.description}",
            )
            entries.append(_Entry(spec, "handoff", agent=target))
        for target in agent.delegates:
            spec = ToolSpec(
                name=f"ask_{target.name}",
                description=(
                    f"Give a self-contained sub-task to {target.name} ({target.description}); "
                    "it works on it separately and answers with its result"
                ),
                parameters={
                    "type": "object",
                    "properties": {"task": {"type": "string", "description": "The sub-task."}},
                    "required": ["task"],
                },
            )
            entries.append(_Entry(spec, "delegate", agent=target))
        catalog: dict[str, _Entry] = {}
        for entry in entries:
            if entry.spec.name in catalog:
                raise AgentDefinitionError(
                    f"agent {agent.name!r} offers two tools named {entry.spec.name!r}",
                    agent=agent.name,
                    tool=entry.spec.name,
                )
            catalog[entry.spec.name] = entry
        return catalog

    # -- one tool call ---------------------------------------------------------------------------

    def _dispatch(
        self,
        catalog: dict[str, _Entry],
        agent: Agent[Any],
        call: ToolCall,
        approval: ApprovalDecision | None = None,
    ) -> Awaitable[_Outcome]:
        """Start the steps for `call` now (so their numbers follow the call order), and return
        an awaitable of (what the model is told, the agent to hand off to)."""
        ctx = self.ctx
        step_name = f"tool:{call.name}"
        step: Awaitable[Any]
        entry = catalog.get(call.name)
        live = not ctx.is_replaying
        if entry is None:
            step = ctx.step(unknown_tool, call.name, sorted(catalog), agent.name, name=step_name)
            return self._outcome(agent, call, step, None, live)
        if entry.kind == "tool":
            assert entry.tool is not None
            step = ctx.step(
                call_tool,
                entry.tool,
                call,
                agent.name,
                self.governed,
                approval,
                self._guard(agent),
                entry.tool.definition.timeout or agent.tool_timeout,
                name=step_name,
                at_most_once=entry.at_most_once,
                record=_call_record(call, approval),
                retry=self._tool_retry(agent, call.name, entry.tool.retry),
            )
            return self._outcome(agent, call, step, None, live)
        if entry.kind == "toolset":
            assert entry.toolset is not None
            assert isinstance(entry.spec, ToolDefinition)
            step = ctx.step(
                call_toolset,
                entry.toolset,
                entry.spec,
                call,
                agent.name,
                self.governed,
                approval,
                self._guard(agent),
                entry.spec.timeout or agent.tool_timeout,
                name=step_name,
                at_most_once=entry.at_most_once,
                record=_call_record(call, approval),
                retry=self._tool_retry(agent, call.name, None),
            )
            return self._outcome(agent, call, step, None, live)
        target = entry.agent
        assert target is not None
        if entry.kind == "handoff":
            step = ctx.step(record_handoff, agent.name, target.name, name=f"handoff:{target.name}")
            return self._outcome(agent, call, step, target, live)
        # delegate: a child run of the target agent, one level deeper.
        if self.depth + 1 > self.agent.max_depth:
            step = ctx.step(
                refuse_depth, agent.name, target.name, self.agent.max_depth, name=step_name
            )
            return self._outcome(agent, call, step, None, live)
        try:
            task = str(parse_arguments(call.name, call.arguments)["task"])
        except (ToolArgumentsInvalid, KeyError):
            step = ctx.step(
                invalid_arguments,
                call.name,
                call.arguments,
                'an object {"task": "<the sub-task>"}',
                name=step_name,
            )
            return self._outcome(agent, call, step, None, live)
        child = ctx.run_child(
            target, AgentTask(input=task, depth=self.depth + 1, scopes=self.chain)
        )
        return self._outcome(agent, call, child, None, live)

    async def _outcome(
        self,
        agent: Agent[Any],
        call: ToolCall,
        step: Awaitable[Any],
        handoff: Agent[Any] | None,
        live: bool,
    ) -> _Outcome:
        if live:
            self._publish(agent, "tool_started", tool=call.name, detail=call.arguments)
        try:
            value = await step
        except StepFailed as exc:
            fatal = _fatal(exc)
            error_type = exc.ids.get("error_type")
            message = exc.ids.get("error_message") or str(exc)
            content = message if error_type == "ToolRetry" else f"Error ({error_type}): {message}"
            if live:
                self._publish(agent, "tool_finished", tool=call.name, detail=content)
            return _Outcome(content, fatal=fatal)
        except (ChildRunFailed, NotSerializable) as exc:
            content = f"Error ({type(exc).__name__}): {exc.message}"
            if live:
                self._publish(agent, "tool_finished", tool=call.name, detail=content)
            return _Outcome(content)
        if isinstance(value, ToolOutcome):
            if value.status == "approval_required":
                assert value.decision is not None
                return _Outcome("", approval=value.decision, arguments=dict(value.arguments or {}))
            value = value.value
        content = f"Transferred to {handoff.name}." if handoff is not None else as_text(value)
        if live:
            kind = "handoff" if handoff is not None else "tool_finished"
            self._publish(agent, kind, tool=call.name, detail=content)
        return _Outcome(content, handoff=handoff)

    # -- approvals -------------------------------------------------------------------------------

    async def _settle_approvals(
        self,
        catalog: dict[str, _Entry],
        agent: Agent[Any],
        calls: Sequence[ToolCall],
        outcomes: list[_Outcome],
    ) -> None:
        """For the calls that need a human: request every approval (in call order), wait for
        each decision durably, then make the approved calls (in parallel) and report the rest."""
        waiting = [i for i, outcome in enumerate(outcomes) if outcome.approval is not None]
        if not waiting:
            return
        requests: dict[int, ApprovalRequest] = {}
        for index in waiting:
            call, outcome = calls[index], outcomes[index]
            entry = catalog[call.name]
            assert outcome.approval is not None
            self._publish(agent, "tool_started", tool=call.name, detail="approval requested")
            requests[index] = await self.ctx.step(
                request_approval_step,
                self.governed,
                entry.spec,
                call,
                outcome.arguments or {},
                outcome.approval,
                name=f"approval:{call.name}",
            )
        decisions = {index: await self._wait_for_decision(requests[index]) for index in waiting}
        approved = [i for i in waiting if decisions[i].status == "approved"]
        finished = await asyncio.gather(
            *(self._dispatch(catalog, agent, calls[i], decisions[i]) for i in approved)
        )
        for index, outcome in zip(approved, finished, strict=True):
            if outcome.fatal is not None:
                raise outcome.fatal
            outcomes[index] = outcome
        for index in waiting:
            decision = decisions[index]
            if decision.status != "approved":
                outcomes[index] = _Outcome(
                    f"Error (ApprovalRejected): the call was rejected by {decision.decided_by}"
                    + (f": {decision.reason}" if decision.reason else "")
                )

    async def _review(self, agent: Agent[Any], output: Any) -> tuple[Any, Violation | None]:
        """Ask a human to review an output its agent's `review` check flags; wait durably.

        Approved: the output (as the reviewer may have edited it). Rejected: a violation whose
        problem is the reviewer's reason, which goes back to the model like a contract's."""
        assert agent.review is not None
        reason = agent.review(output)
        if not reason:
            return output, None
        schema = agent.contract.json_schema() or {"type": "string"}
        spec = ToolSpec(
            name=f"output_{agent.name}",
            description=f"the final output of agent {agent.name}",
            parameters={
                "type": "object",
                "properties": {"output": schema},
                "required": ["output"],
            },
        )
        decision = Decision(
            effect="require_approval",
            rule="review",
            reason=reason,
            approval=ApprovalSpec(
                approvers=agent.reviewers, deadline=agent.review_deadline, on_deadline="reject"
            ),
        )
        arguments = {"output": to_jsonable_python(output)}
        request = await self.ctx.step(
            request_approval_step,
            self.governed,
            spec,
            ToolCall(call_id="output", name=spec.name, arguments=json.dumps(arguments)),
            arguments,
            decision,
            name=f"review:{agent.name}",
        )
        verdict = await self._wait_for_decision(request)
        if verdict.status != "approved":
            return None, Violation(
                f"review by {verdict.decided_by}", verdict.reason or "rejected by the reviewer"
            )
        reviewed = verdict.arguments.get("output")
        value, violation = agent.contract.parse(
            reviewed if isinstance(reviewed, str) else json.dumps(reviewed)
        )
        return (value, None) if violation is None else (output, None)

    async def _wait_for_decision(self, request: ApprovalRequest) -> ApprovalDecision:
        """Wait (durably: the run is unloaded) for a human's decision, or the deadline's."""
        deadline = request.deadline
        timeout = None if deadline is None else max(deadline - request.created_at, 0.0)
        while True:
            try:
                data = await self.ctx.wait_for_signal(
                    signal_name(request.approval_id), timeout=timeout
                )
                return ApprovalDecision.model_validate(data)
            except SignalTimeout:
                outcome = await self.ctx.step(
                    approval_deadline_step,
                    self.governed,
                    request.approval_id,
                    name=f"approval.deadline:{request.tool}",
                )
                if outcome.decision is not None:
                    return outcome.decision
                assert outcome.escalated_until is not None
                assert deadline is not None
                # At least a second: a deadline not yet come on this host's clock is waited out.
                timeout = max(outcome.escalated_until - deadline, 1.0)
                deadline = outcome.escalated_until

    # -- failing and publishing ------------------------------------------------------------------

    async def _fail(self, agent: Agent[Any], error: CorralError) -> None:
        """Journal `error` as a failed step, then raise it: the journal shows why the loop ended,
        and a replay ends the same way."""
        with contextlib.suppress(StepFailed):
            await self.ctx.step(raise_error, error, name=f"agent.failed:{agent.name}")
        raise error

    def _listener(self) -> Listener | None:
        if self.listener is None and not agent_events.active:
            return None
        return self._deliver

    def _deliver(self, event: AgentEvent) -> None:
        if self.listener is not None:
            self.listener(event)
        agent_events.publish(event)

    def _publish(
        self,
        agent: Agent[Any],
        kind: Any,
        *,
        tool: str | None = None,
        detail: str = "",
        usage: Usage | None = None,
    ) -> None:
        if self.listener is None and not agent_events.active:
            return
        self._deliver(
            AgentEvent(
                run_id=self.ctx.run_id,
                agent=agent.name,
                kind=kind,
                tool=tool,
                detail=detail,
                usage=usage,
            )
        )


# -- step bodies (module functions: the engine caches their type hints by function) ------------


async def call_model(
    agent: Agent[Any],
    request: ModelRequest,
    listener: Listener | None,
    governed: Governed,
    guard: CallGuard,
) -> ModelResponse:
    """One model call, reserved against the budgets before and settled after, through the
    endpoint's circuit breaker and within `model_timeout`; on a failure or an open circuit, the
    agent's fallback models in turn. Streams (publishing each piece) when someone listens."""
    step = current_step()
    assert step is not None
    chain = agent.models() if agent.fallback_specs else [agent.model()]
    passed_over: list[str] = []
    for position, candidate in enumerate(chain):
        model, reserved = await governed.start_model(candidate, request, step)
        try:
            response = await guard.call(
                model.endpoint,
                agent.model_timeout,
                f"model {model.name!r}",
                functools.partial(_complete, model, agent, request, listener, step),
            )
        except (ModelCallFailed, CircuitOpen, StepTimeout) as failure:
            await governed.finish_model(model, reserved, Usage(requests=0))
            if position == len(chain) - 1:
                raise
            passed_over.append(f"{model.name}: {failure.code}")
            log.warning(
                "agent %s: %s failed (%s); falling back to %s",
                agent.name,
                model.name,
                failure.message,
                chain[position + 1].name,
            )
            continue
        await governed.finish_model(model, reserved, response.usage)
        return with_fallback_notes(response, passed_over)  # type: ignore[no-any-return]
    raise AssertionError("unreachable: the chain has at least one model")


async def _complete(
    model: Model, agent: Agent[Any], request: ModelRequest, listener: Listener | None, step: Any
) -> ModelResponse:
    if listener is None:
        return await model.complete(request)
    response: ModelResponse | None = None
    async for event in model.stream(request):
        if isinstance(event, Completed):
            response = event.response
        listener(
            AgentEvent(
                run_id=step.run_id if step else "",
                agent=agent.name,
                kind="model",
                seq=step.seq if step else None,
                model_event=event,
            )
        )
    if response is None:
        raise ModelCallFailed(
            f"model {model.name!r} ended its stream without a response", model=model.name
        )
    return response


@dataclass(frozen=True)
class _Outcome:
    """What became of one tool call in a turn: what the model is told, and what follows."""

    content: str
    handoff: Agent[Any] | None = None
    approval: Decision | None = None
    """Set when the call waits for a human (it did not start)."""
    arguments: dict[str, Any] | None = None
    fatal: CorralError | None = None
    """Set when the call stopped the run (a kill switch, an exhausted budget)."""


_FATAL = {"Paused": Paused, "BudgetExceeded": BudgetExceeded}


def _fatal(exc: StepFailed) -> CorralError | None:
    """The run-stopping error a failed step carries, rebuilt; None for errors the model hears."""
    kind = _FATAL.get(str(exc.ids.get("error_type")))
    if kind is None:
        return None
    return kind(str(exc.ids.get("error_message") or exc.message), run_id=exc.ids.get("run_id"))


async def list_tools(toolset: Toolset) -> list[ToolDefinition]:
    return await toolset.list_tools()


def _tool_context(
    tool_name: str, agent: str, call: ToolCall, approval: ApprovalDecision | None
) -> ToolContext:
    step = current_step()
    assert step is not None, "tools are called inside their step"
    return ToolContext(
        run_id=step.run_id,
        step_seq=step.seq,
        idempotency_key=step.idempotency_key,
        tool_name=tool_name,
        agent=agent,
        call_id=call.call_id,
        redelivered=step.redelivered,
        approved_by=approval.decided_by if approval is not None else None,
        approval_note=approval.reason if approval is not None else None,
    )


async def call_tool(
    tool: Tool,
    call: ToolCall,
    agent: str,
    governed: Governed,
    approval: ApprovalDecision | None,
    guard: CallGuard,
    timeout: float | None,
) -> ToolOutcome:
    # Validate first: a malformed call goes back to the model and is never governed or made.
    arguments = tool.validate(approval.arguments if approval else call.arguments)
    return await _governed_call(
        tool.definition,
        arguments,
        governed,
        approval,
        lambda limit: guard.call(
            tool_dependency(tool.name),
            _shortest(timeout, limit),
            f"tool {tool.name!r}",
            lambda: tool.call(arguments, _tool_context(tool.name, agent, call, approval)),
        ),
    )


async def call_toolset(
    toolset: Toolset,
    spec: ToolDefinition,
    call: ToolCall,
    agent: str,
    governed: Governed,
    approval: ApprovalDecision | None,
    guard: CallGuard,
    timeout: float | None,
) -> ToolOutcome:
    arguments = dict(approval.arguments) if approval else parse_arguments(spec.name, call.arguments)
    try:
        jsonschema.validate(arguments, spec.parameters)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(arguments)"
        raise ToolArgumentsInvalid(
            f"arguments for tool {spec.name!r} failed its schema: {where}: {exc.message}",
            tool=spec.name,
        ) from None
    return await _governed_call(
        spec,
        arguments,
        governed,
        approval,
        lambda limit: guard.call(
            tool_dependency(spec.name),
            _shortest(timeout, limit),
            f"tool {spec.name!r}",
            lambda: toolset.call_tool(
                spec.name, arguments, _tool_context(spec.name, agent, call, approval)
            ),
        ),
    )


async def _governed_call(
    definition: ToolDefinition,
    arguments: dict[str, Any],
    governed: Governed,
    approval: ApprovalDecision | None,
    make_call: Callable[[float | None], Awaitable[Any]],
) -> ToolOutcome:
    """Decide, then (unless stopped) start and account for the call: the body of a tool step.
    `make_call` is given the policies' timeout for the call (None: no rule set one)."""
    step = current_step()
    assert step is not None
    decision = await governed.check_tool(definition, arguments, step, approval)
    if decision.effect == "require_approval" and approval is None:
        return ToolOutcome(
            status="approval_required", decision=decision, arguments=to_jsonable_python(arguments)
        )
    reserved = await governed.start_tool(definition, step, approval)
    if isinstance(reserved, Decision):  # over budget, and its policy asks a human
        return ToolOutcome(
            status="approval_required", decision=reserved, arguments=to_jsonable_python(arguments)
        )
    try:
        value = await make_call(decision.timeout)
    except ApprovalRequired as review:  # the tool asks a human to review this call first
        await governed.finish_tool(reserved, used=0.0)
        if approval is not None:
            raise  # approved, and it asks again: it is the tool's error to report
        return ToolOutcome(
            status="approval_required",
            decision=review_decision(definition.name, review),
            arguments=to_jsonable_python(arguments),
        )
    await governed.finish_tool(reserved)
    return ToolOutcome(value=to_jsonable_python(value), decision=decision)


def _call_record(call: ToolCall, approval: ApprovalDecision | None) -> dict[str, Any]:
    """What a tool step journals about its call: the call id, the tool, the arguments as the
    model wrote them (and the approved ones, with who approved), for search and replay."""
    record: dict[str, Any] = {"call_id": call.call_id, "tool": call.name}
    try:
        record["arguments"] = json.loads(call.arguments)
    except ValueError:
        record["arguments"] = call.arguments
    if approval is not None:
        record["approved_arguments"] = approval.arguments
        record["approval_id"] = approval.approval_id
    return record


def _shortest(*limits: float | None) -> float | None:
    given = [limit for limit in limits if limit is not None]
    return min(given) if given else None


def review_decision(tool: str, review: ApprovalRequired) -> Decision:
    """The decision a tool's `raise ApprovalRequired(reason, approvers=[…], deadline=…,
    on_deadline=…)` stands for."""
    approvers = review.ids.get("approvers")
    if not approvers:
        raise AgentDefinitionError(
            f"tool {tool!r} raised ApprovalRequired without approvers: raise "
            "ApprovalRequired('why', approvers=['group'])",
            tool=tool,
        )
    return Decision(
        effect="require_approval",
        rule="review",
        reason=review.message,
        approval=ApprovalSpec(
            approvers=tuple(approvers),
            deadline=review.ids.get("deadline"),
            on_deadline=review.ids.get("on_deadline", "reject"),
            escalate_to=tuple(review.ids.get("escalate_to") or ()),
            escalation_deadline=review.ids.get("escalation_deadline"),
        ),
    )


async def request_approval_step(
    governed: Governed,
    spec: ToolSpec,
    call: ToolCall,
    arguments: dict[str, Any],
    decision: Decision,
) -> ApprovalRequest:
    """Record an approval request for one exact call (idempotent per step)."""
    step = current_step()
    assert step is not None
    assert decision.approval is not None
    subject = governed.subject
    now = governed.governor.clock.now()
    return await governed.governor.store.run_script(
        lambda d: request_approval(
            tenant=subject.tenant,
            run_id=subject.run_id,
            step_seq=step.seq,
            agent=subject.agent,
            tool=spec.name,
            arguments=arguments,
            parameters=spec.parameters,
            reason=decision.reason,
            policy=decision.policy,
            policy_version=decision.version,
            rule=decision.rule,
            spec=decision.approval,  # type: ignore[arg-type]
            now=now,
            dialect=d,
        )
    )


async def approval_deadline_step(governed: Governed, approval_id: str) -> DeadlineOutcome:
    """The deadline passed with no decision: apply the policy's `on_deadline`."""
    now = governed.governor.clock.now()
    return await governed.governor.store.run_script(
        lambda d: deadline_passed(approval_id, now=now, dialect=d)
    )


async def unknown_tool(name: str, available: list[str], agent: str) -> None:
    raise UnknownTool(
        f"agent {agent!r} has no tool named {name!r}; its tools are: "
        f"{', '.join(available) or '(none)'}",
        tool=name,
        agent=agent,
    )


async def invalid_arguments(name: str, arguments: str, expected: str) -> None:
    raise ToolArgumentsInvalid(
        f"arguments for {name!r} must be {expected}; got {arguments[:200]!r}", tool=name
    )


async def record_handoff(source: str, target: str) -> str:
    return target


async def refuse_depth(source: str, target: str, limit: int) -> None:
    raise DepthLimitExceeded(
        f"agent {source!r} cannot delegate to {target!r}: delegation is already {limit} "
        f"level(s) deep (max_depth={limit})",
        agent=source,
        target=target,
        max_depth=limit,
    )


async def raise_error(error: CorralError) -> None:
    raise error


def _canonical_arguments(arguments: str) -> str:
    """Arguments as canonical JSON, so `{"a":1,"b":2}` and `{"b": 2, "a": 1}` are the same call."""
    try:
        return json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return arguments


def as_text(value: Any) -> str:
    """What a model is shown for a value: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(to_jsonable_python(value), ensure_ascii=False)
