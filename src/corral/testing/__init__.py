"""Supported fakes for testing workflows: a virtual clock (more fakes join as Corral grows)."""

from corral.testing.clock import FakeClock
from corral.testing.model_servers import (
    AnthropicCompatibleServer,
    OpenAICompatibleServer,
    RawBody,
    ScriptItem,
    ServerFailure,
    ServerReply,
)

__all__ = [
    "AnthropicCompatibleServer",
    "FakeClock",
    "OpenAICompatibleServer",
    "RawBody",
    "ScriptItem",
    "ServerFailure",
    "ServerReply",
]
