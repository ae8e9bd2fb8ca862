"""Model clients: one protocol, the OpenAI and Anthropic SDKs behind it, and a scripted model.

Pick a model by string (`openai:gpt-4.1-mini`, `anthropic:claude-sonnet-4-5`, `scripted`) or
pass a `Model` object. See docs/agents.md.
"""

from corral.models.messages import (
    Completed,
    Message,
    ModelEvent,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from corral.models.model import Model
from corral.models.network import allow_network_models, network_models_allowed
from corral.models.registry import resolve_model
from corral.models.scripted import Call, ScriptedModel, Turn, reply
from corral.models.settings import ModelSettings

__all__ = [
    "Call",
    "Completed",
    "Message",
    "Model",
    "ModelEvent",
    "ModelRequest",
    "ModelResponse",
    "ModelSettings",
    "ScriptedModel",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Turn",
    "Usage",
    "allow_network_models",
    "network_models_allowed",
    "reply",
    "resolve_model",
]
