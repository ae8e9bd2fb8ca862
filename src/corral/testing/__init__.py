"""Supported fakes for testing workflows and agents: a virtual clock, and OpenAI- and
Anthropic-compatible model servers on 127.0.0.1 that answer from a script or from rules, fail
with any status, or hang."""

from corral.testing.clock import FakeClock
from corral.testing.model_servers import (
    Answer,
    AnthropicCompatibleServer,
    Hang,
    OpenAICompatibleServer,
    RawBody,
    Rules,
    ScriptItem,
    ServerFailure,
    ServerReply,
)

__all__ = [
    "Answer",
    "AnthropicCompatibleServer",
    "FakeClock",
    "Hang",
    "OpenAICompatibleServer",
    "RawBody",
    "Rules",
    "ScriptItem",
    "ServerFailure",
    "ServerReply",
]
