"""A group chat: an architect, a security reviewer and a product owner discuss a plan on one
shared thread, in turn, until they agree (or the rounds or the token budget run out).

    python examples/group_chat.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from corral import Corral
from corral.agents import Agent, GroupChat
from corral.models import Message, ModelRequest, ScriptedModel

LINES = {
    "architect": [
        "Store sessions in Redis with a 30-minute TTL.",
        "Agreed on TLS and AUTH; I'll add both. APPROVED from me.",
    ],
    "security": [
        "Only if Redis requires TLS and AUTH, and session ids are random 128-bit tokens.",
        "With TLS and AUTH in, APPROVED.",
    ],
    "product": ["Fine by me if logins survive a deploy. APPROVED."],
}


def say(name: str) -> ScriptedModel:
    def rules(request: ModelRequest) -> str:
        # What this agent has said so far is its own (assistant) messages in the thread.
        said = sum(1 for m in request.messages if m.role == "assistant")
        lines = LINES[name]
        return lines[min(said, len(lines) - 1)]

    return ScriptedModel(rules=rules)


architect = Agent("architect", instructions="You design the system.", model=say("architect"))
security = Agent("security", instructions="You review for security.", model=say("security"))
product = Agent("product", instructions="You own the product.", model=say("product"))


def everyone_approved(thread: list[Message]) -> bool:
    """The consensus predicate: the last message of each speaker says APPROVED."""
    last: dict[str, str] = {}
    for message in thread:
        if message.author:
            last[message.author] = message.content
    return len(last) == 3 and all("APPROVED" in text for text in last.values())


review = GroupChat(
    "design-review",
    [architect, security, product],
    selector="round_robin",
    max_rounds=9,
    until=everyone_approved,
    max_tokens=5_000,
)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Corral(f"sqlite:///{Path(tmp) / 'corral.db'}") as corral:
            handle = await corral.start(review, "Where should we keep user sessions?")
            await corral.run_until_idle()
            result = await handle.wait_for_result()
            for message in result.thread:
                print(f"  {message.author or 'topic'}: {message.content}")
            print(
                f"ended by: {result.ended_by} after {result.rounds} rounds, "
                f"{result.usage.total_tokens} tokens"
            )
            for step in await corral.journal(handle.run_id):
                print(f"  {step.seq:>2} {step.kind:<6} {step.name:<18} {step.status}")


if __name__ == "__main__":
    asyncio.run(main())
