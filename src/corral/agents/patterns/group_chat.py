"""The group chat: agents take turns on one shared thread until a condition, a round limit or a
token budget ends it.

```python
chat = GroupChat(
    "design-review",
    [architect, security, product],
    selector="round_robin",               # or a function of the thread, or an agent
    max_rounds=6,
    until=lambda thread: "APPROVED" in thread[-1].content,
    max_tokens=20_000,
)
result = await chat.run(ctx, "Review the plan to store sessions in Redis.")
result.thread, result.ended_by
```

A round is one turn: one agent runs (inline, in this run: its model and tool steps are in this
run's journal) on the thread so far and adds one message, authored by it. Each speaker sees the
others' messages as user messages prefixed with their author (`architect: …`), and its own as its
own, so a model never mistakes another agent's words for its own. After each turn, the chat ends
if `until(thread)` holds, if the tokens used reach `max_tokens`, or after `max_rounds` turns.

The next speaker is chosen by `selector`: `"round_robin"` (in the order given, no model call), a
function `(thread, names) -> name` (pure: a replay calls it again on the same thread), or an
agent, which reads the thread and answers `{"speaker": "<name>"}` (a model call per turn, its
steps in the journal; a name that is not a speaker is refused and retried by its contract).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from corral.agents.agent import Agent
from corral.agents.loop import as_text
from corral.agents.patterns.state import Namespaces
from corral.agents.patterns.targets import (
    choice_agent,
    choices_text,
    fail,
    reachable_workflows,
)
from corral.engine import RunContext, Workflow
from corral.errors import AgentDefinitionError, OutputInvalid
from corral.models import Message, Usage

Selector = Literal["round_robin"] | Callable[[list[Message], list[str]], str] | Agent[Any]
EndedBy = Literal["until", "max_rounds", "max_tokens"]


class ChatResult(BaseModel):
    """A finished group chat."""

    thread: list[Message]
    """The topic (a user message), then one message per round, each with its `author`."""
    rounds: int
    ended_by: EndedBy
    usage: Usage
    """Every model call of the chat: the speakers' and the selector's."""
    contributions: dict[str, list[str]] = Field(default_factory=dict)
    """Each speaker's messages, under its own name (speakers that never spoke: empty)."""


class GroupChat:
    """Agents conversing on a shared thread, one message per turn.

    Args:
        name: Names the chat's workflow (`chat:<name>`) and its failure step
            (`chat.failed:<name>`).
        agents: The speakers; names unique.
        selector: Who speaks next: `"round_robin"`, a function `(thread, names) -> name`, or an
            agent that answers `{"speaker": "<name>"}` (its instructions gain the speakers'
            names and descriptions).
        max_rounds: Turns at most.
        until: A consensus predicate on the thread, checked after every turn.
        max_tokens: A token budget (input + output, all model calls); the chat ends after the
            turn that reaches it.
        version: The version of the chat's workflow.
    """

    def __init__(
        self,
        name: str,
        agents: Sequence[Agent[Any]],
        *,
        selector: Selector = "round_robin",
        max_rounds: int = 10,
        until: Callable[[list[Message]], bool] | None = None,
        max_tokens: int | None = None,
        version: str = "1",
    ) -> None:
        if not agents:
            raise AgentDefinitionError(f"group chat {name!r} has no agents", chat=name)
        names = [agent.name for agent in agents]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise AgentDefinitionError(
                f"group chat {name!r} has two agents named {', '.join(repeated)}", chat=name
            )
        if max_rounds < 1 or (max_tokens is not None and max_tokens < 1):
            raise AgentDefinitionError(
                f"group chat {name!r}: max_rounds and max_tokens must be >= 1", chat=name
            )
        if not (selector == "round_robin" or isinstance(selector, Agent) or callable(selector)):
            raise AgentDefinitionError(
                f"group chat {name!r}: selector must be 'round_robin', a function or an Agent, "
                f"not {selector!r}",
                chat=name,
            )
        self.name = name
        self.agents = {agent.name: agent for agent in agents}
        self.selector = selector
        self.max_rounds = max_rounds
        self.until = until
        self.max_tokens = max_tokens
        self.version = version
        self._chooser = (
            choice_agent(
                selector,
                field="speaker",
                names=names,
                what="next speaker",
                described=choices_text(self.agents),
            )
            if isinstance(selector, Agent)
            else None
        )
        self._workflow: Workflow[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"<GroupChat {self.name}: {', '.join(self.agents)}>"

    async def run(self, ctx: RunContext, topic: Any) -> ChatResult:
        """Hold the chat on `topic` (text, or a value shown as JSON) and return its thread.

        Raises:
            OutputInvalid: A selector function named no speaker (journaled as
                `chat.failed:<name>`), or a selector agent never did within its retries.
        """
        thread = [Message.user(as_text(topic))]
        names = list(self.agents)
        state = Namespaces(names, merge="collect")
        writers = {name: state.writer(name) for name in names}
        usage = Usage(requests=0)
        rounds = 0
        ended_by: EndedBy = "max_rounds"
        while rounds < self.max_rounds:
            speaker, selector_usage = await self._next_speaker(ctx, thread, rounds)
            usage = usage + selector_usage
            agent = self.agents[speaker]
            result = await agent.run(
                ctx,
                f"[{self.name}] It is your turn, {speaker}: write your next message.",
                thread=_seen_by(speaker, thread),
            )
            usage = usage + result.usage
            text = as_text(result.output)
            thread.append(Message.assistant(text, author=result.agent))
            writers[speaker].write(text)
            rounds += 1
            if self.until is not None and self.until(list(thread)):
                ended_by = "until"
                break
            if self.max_tokens is not None and usage.total_tokens >= self.max_tokens:
                ended_by = "max_tokens"
                break
        return ChatResult(
            thread=thread,
            rounds=rounds,
            ended_by=ended_by,
            usage=usage,
            contributions=state.merged(),
        )

    async def _next_speaker(
        self, ctx: RunContext, thread: list[Message], rounds: int
    ) -> tuple[str, Usage]:
        names = list(self.agents)
        if self._chooser is not None:
            result = await self._chooser.run(
                ctx, "Who should speak next?", thread=_seen_by(self._chooser.name, thread)
            )
            return result.output.speaker, result.usage
        if callable(self.selector) and not isinstance(self.selector, Agent):
            chosen = self.selector(list(thread), names)
            if chosen not in self.agents:
                await fail(
                    ctx,
                    OutputInvalid(
                        f"group chat {self.name!r}: the selector chose {chosen!r}, which is not "
                        f"one of its agents ({', '.join(names)})",
                        chat=self.name,
                        run_id=ctx.run_id,
                        violation=f"unknown speaker {chosen!r}",
                    ),
                    name=f"chat.failed:{self.name}",
                )
            return chosen, Usage(requests=0)
        return names[rounds % len(names)], Usage(requests=0)

    # -- as a workflow -------------------------------------------------------------------------

    @property
    def workflow(self) -> Workflow[Any, Any]:
        """The workflow `chat:<name>`: a topic in, the `ChatResult` out."""
        if self._workflow is None:
            chat = self

            async def hold_chat(ctx: RunContext, topic: Any) -> ChatResult:
                return await chat.run(ctx, topic)

            self._workflow = Workflow(
                fn=hold_chat,
                name=f"chat:{self.name}",
                version=self.version,
                input_type=None,
                output_type=ChatResult,
            )
        return self._workflow

    def __corral_workflow__(self) -> Workflow[Any, Any]:
        return self.workflow

    def __corral_workflows__(self) -> Iterable[Workflow[Any, Any]]:
        # Speakers run inline; what they may delegate or hand off to runs as child runs.
        found: dict[str, Workflow[Any, Any]] = {}
        for agent in self.agents.values():
            for wf in reachable_workflows(agent):
                found.setdefault(wf.name, wf)
        return [self.workflow, *found.values()]


def _seen_by(name: str, thread: list[Message]) -> list[Message]:
    """The thread as agent `name` sees it: its own messages as its own (assistant), everyone
    else's as user messages saying who wrote them."""
    seen: list[Message] = []
    for message in thread:
        if message.role == "assistant" and message.author != name:
            seen.append(Message.user(f"{message.author or 'someone'}: {message.content}"))
        else:
            seen.append(message)
    return seen
