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
import json
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import jsonschema
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from corral.agents.agent import Agent, AgentResult, AgentTask
from corral.agents.events import AgentEvent, Listener, agent_events
from corral.engine import current_step
from corral.errors import (
    AgentDefinitionError,
    ChildRunFailed,
    CorralError,
    DepthLimitExceeded,
    NotSerializable,
    OutputInvalid,
    StepFailed,
    ToolArgumentsInvalid,
    TurnLimitExceeded,
    UnknownTool,
)
from corral.models import Completed, Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from corral.tools import Tool, ToolContext, ToolDefinition, Toolset, parse_arguments

if TYPE_CHECKING:
    from corral.engine import RunContext

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
        self, ctx: RunContext, agent: Agent[Any], *, depth: int, listener: Listener | None
    ) -> None:
        self.ctx = ctx
        self.agent = agent
        self.depth = depth
        self.listener = listener

    async def run(self, input: Any, thread: Sequence[Message]) -> AgentResult[Any]:
        messages = [*thread, Message.user(as_text(input))]
        current = self.agent
        catalog = await self._catalog(current)
        turns = 0
        refusals = 0
        usage = Usage(requests=0)
        models: list[str] = []
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
            request = ModelRequest(
                instructions=current.instructions,
                messages=list(messages),
                tools=[entry.spec for entry in catalog.values()],
                output_schema=current.contract.json_schema(),
                agent=current.name,
            )
            response = await self.ctx.step(
                call_model, current, request, self._listener(), name=f"model:{current.name}"
            )
            usage = usage + response.usage
            if response.model not in models:
                models.append(response.model)
            message = response.message.model_copy(update={"author": current.name})
            messages.append(message)
            if not message.tool_calls:
                output, violation = current.contract.parse(message.content)
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
            outcomes = await asyncio.gather(
                *(self._dispatch(catalog, current, call) for call in message.tool_calls)
            )
            handoff: Agent[Any] | None = None
            for call, (content, target) in zip(message.tool_calls, outcomes, strict=True):
                messages.append(Message.tool(call.call_id, content))
                handoff = handoff or target
            if handoff is not None:
                current = handoff
                catalog = await self._catalog(current)

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
        self, catalog: dict[str, _Entry], agent: Agent[Any], call: ToolCall
    ) -> Awaitable[tuple[str, Agent[Any] | None]]:
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
                name=step_name,
                at_most_once=entry.at_most_once,
            )
            return self._outcome(agent, call, step, None, live)
        if entry.kind == "toolset":
            assert entry.toolset is not None
            step = ctx.step(
                call_toolset,
                entry.toolset,
                entry.spec,
                call,
                agent.name,
                name=step_name,
                at_most_once=entry.at_most_once,
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
        child = ctx.run_child(target, AgentTask(input=task, depth=self.depth + 1))
        return self._outcome(agent, call, child, None, live)

    async def _outcome(
        self,
        agent: Agent[Any],
        call: ToolCall,
        step: Awaitable[Any],
        handoff: Agent[Any] | None,
        live: bool,
    ) -> tuple[str, Agent[Any] | None]:
        if live:
            self._publish(agent, "tool_started", tool=call.name, detail=call.arguments)
        try:
            value = await step
        except StepFailed as exc:
            error_type = exc.ids.get("error_type")
            message = exc.ids.get("error_message") or str(exc)
            content = message if error_type == "ToolRetry" else f"Error ({error_type}): {message}"
            handoff = None
        except (ChildRunFailed, NotSerializable) as exc:
            content = f"Error ({type(exc).__name__}): {exc.message}"
            handoff = None
        else:
            content = f"Transferred to {handoff.name}." if handoff is not None else as_text(value)
        if live:
            kind = "handoff" if handoff is not None else "tool_finished"
            self._publish(agent, kind, tool=call.name, detail=content)
        return content, handoff

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
    agent: Agent[Any], request: ModelRequest, listener: Listener | None
) -> ModelResponse:
    """One model call. Streams (publishing each piece) when someone is listening."""
    model = agent.model()
    if listener is None:
        return await model.complete(request)
    step = current_step()
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
        raise ModelCallFailedError(model.name)
    return response


def ModelCallFailedError(model: str) -> CorralError:
    from corral.errors import ModelCallFailed

    return ModelCallFailed(f"model {model!r} ended its stream without a response", model=model)


async def list_tools(toolset: Toolset) -> list[ToolDefinition]:
    return await toolset.list_tools()


def _tool_context(tool_name: str, agent: str, call: ToolCall) -> ToolContext:
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
    )


async def call_tool(tool: Tool, call: ToolCall, agent: str) -> Any:
    arguments = tool.validate(call.arguments)  # before the call: a failure goes to the model
    value = await tool.call(arguments, _tool_context(tool.name, agent, call))
    return to_jsonable_python(value)


async def call_toolset(toolset: Toolset, spec: ToolSpec, call: ToolCall, agent: str) -> Any:
    arguments = parse_arguments(spec.name, call.arguments)
    try:
        jsonschema.validate(arguments, spec.parameters)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(arguments)"
        raise ToolArgumentsInvalid(
            f"arguments for tool {spec.name!r} failed its schema: {where}: {exc.message}",
            tool=spec.name,
        ) from None
    value = await toolset.call_tool(spec.name, arguments, _tool_context(spec.name, agent, call))
    return to_jsonable_python(value)


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


def as_text(value: Any) -> str:
    """What a model is shown for a value: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(to_jsonable_python(value), ensure_ascii=False)
