"""What goes to a model and what comes back: messages, tool calls, tool specs, usage.

These are the journal's shapes for model steps: a `ModelResponse` is stored as the step's result
and loaded back as the same object on replay, so they are pydantic models with plain fields.
Every provider client translates to and from them; nothing above `corral.models` sees a
provider's own types.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    """A model's request to call a tool. `arguments` is the JSON text exactly as the model wrote
    it: it may be malformed, and the tool loop (not the client) decides what to do about that."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    name: str
    arguments: str = "{}"


class Message(BaseModel):
    """One message of a conversation.

    `author` names the agent that wrote an assistant message (group chats and handoffs share a
    thread between agents); `tool_call_id` ties a tool message to the call it answers.
    """

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    author: str | None = None

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, content: str, *, author: str | None = None) -> Message:
        return cls(role="assistant", content=content, author=author)

    @classmethod
    def tool(cls, call_id: str, content: str) -> Message:
        return cls(role="tool", content=content, tool_call_id=call_id)


class ToolSpec(BaseModel):
    """What a model is told about a tool: its name, what it does, and its arguments' JSON schema."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Usage(BaseModel):
    """Tokens of one model call (or a sum of calls)."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 1

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            requests=self.requests + other.requests,
        )


class ModelRequest(BaseModel):
    """One call to a model: instructions, the conversation so far, the tools it may call, and
    (for an agent with a typed output) the JSON schema its final answer must satisfy."""

    instructions: str = ""
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    agent: str | None = None
    """The agent making the call; scripted models use it to pick their rules."""


class ModelResponse(BaseModel):
    """A model's complete answer to one request, as journaled by the model step."""

    message: Message
    usage: Usage = Field(default_factory=Usage)
    model: str
    """The model that answered, as `provider:name` (`scripted:…` for the scripted model)."""
    finish_reason: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    """The models tried first in this step and why each was passed over (`openai:gpt-4o:
    circuit_open`), when a fallback answered."""

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls


class TextDelta(BaseModel):
    """A piece of a model's text, as it streams."""

    kind: Literal["text"] = "text"
    text: str


class ToolCallDelta(BaseModel):
    """A tool call the model has started to write (its arguments may still be streaming)."""

    kind: Literal["tool_call"] = "tool_call"
    call_id: str
    name: str


class Completed(BaseModel):
    """The end of a stream: the complete response, exactly what the journal records."""

    kind: Literal["completed"] = "completed"
    response: ModelResponse


ModelEvent = TextDelta | ToolCallDelta | Completed
