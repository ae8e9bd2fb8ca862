"""The group chat: turns on a shared thread; selectors; ending by consensus, rounds or tokens."""

from __future__ import annotations

from typing import Any

import pytest

from corral import Corral, RunContext
from corral.agents import Agent, ChatResult, GroupChat
from corral.errors import AgentDefinitionError
from corral.models import Call, Message, ModelRequest, ScriptedModel, reply

from .harness import run_error, steps_of

seen: dict[str, list[ModelRequest]] = {}


def speaker(name: str, *, agree_after: int = 99) -> Agent[Any]:
    """An agent that proposes, and says AGREED once it has spoken `agree_after` times."""

    def rules(request: ModelRequest) -> str:
        seen.setdefault(name, []).append(request)
        spoken = sum(1 for m in request.messages if m.role == "assistant")
        if spoken + 1 >= agree_after:
            return f"{name}: AGREED"
        return f"{name}: idea {spoken + 1}"

    return Agent(name, description=f"{name}'s view", model=ScriptedModel(rules=rules))


def agreed(thread: list[Message]) -> bool:
    return "AGREED" in thread[-1].content


async def hold(corral: Corral, chat: GroupChat, topic: str) -> tuple[str, ChatResult]:
    handle = await corral.start(chat, topic)
    await corral.run_until_idle()
    return handle.run_id, await handle.wait_for_result()


async def test_round_robin_until_consensus(corral: Corral) -> None:
    seen.clear()
    chat = GroupChat(
        "plan", [speaker("ana"), speaker("ben", agree_after=2)], until=agreed, max_rounds=9
    )
    run_id, result = await hold(corral, chat, "Where do we store sessions?")
    assert (result.rounds, result.ended_by) == (4, "until")
    assert [(m.author, m.content) for m in result.thread] == [
        (None, "Where do we store sessions?"),
        ("ana", "ana: idea 1"),
        ("ben", "ben: idea 1"),
        ("ana", "ana: idea 2"),
        ("ben", "ben: AGREED"),
    ]
    assert await steps_of(corral, run_id) == [
        ("model:ana", "succeeded"),
        ("model:ben", "succeeded"),
        ("model:ana", "succeeded"),
        ("model:ben", "succeeded"),
    ]
    assert result.contributions == {
        "ana": ["ana: idea 1", "ana: idea 2"],
        "ben": ["ben: idea 1", "ben: AGREED"],
    }
    assert result.usage.requests == 4
    # Ben sees Ana's words as hers (a user message naming her), and his own as his own.
    last = seen["ben"][-1].messages
    assert [(m.role, m.content) for m in last] == [
        ("user", "Where do we store sessions?"),
        ("user", "ana: ana: idea 1"),
        ("assistant", "ben: idea 1"),
        ("user", "ana: ana: idea 2"),
        ("user", "[plan] It is your turn, ben: write your next message."),
    ]


async def test_max_rounds_ends_a_chat_that_never_agrees(corral: Corral) -> None:
    chat = GroupChat("plan", [speaker("ana"), speaker("ben")], until=agreed, max_rounds=3)
    run_id, result = await hold(corral, chat, "Anything?")
    assert (result.rounds, result.ended_by) == (3, "max_rounds")
    assert [name for name, _ in await steps_of(corral, run_id)] == [
        "model:ana",
        "model:ben",
        "model:ana",
    ]


async def test_a_token_budget_ends_the_chat(corral: Corral) -> None:
    chat = GroupChat("plan", [speaker("ana"), speaker("ben")], max_tokens=40)
    run_id, result = await hold(corral, chat, "A long topic " * 5)
    assert result.ended_by == "max_tokens"
    assert result.usage.total_tokens >= 40
    assert result.rounds == len(await steps_of(corral, run_id)) < 10


async def test_a_selector_function_picks_speakers(corral: Corral) -> None:
    def loudest_last(thread: list[Message], names: list[str]) -> str:
        return "cat" if len(thread) < 3 else "ana"

    chat = GroupChat(
        "plan",
        [speaker("ana"), speaker("ben"), speaker("cat")],
        selector=loudest_last,
        max_rounds=3,
    )
    run_id, result = await hold(corral, chat, "topic")
    assert [m.author for m in result.thread[1:]] == ["cat", "cat", "ana"]
    assert await steps_of(corral, run_id) == [
        ("model:cat", "succeeded"),
        ("model:cat", "succeeded"),
        ("model:ana", "succeeded"),
    ]
    assert result.contributions["ben"] == []


async def test_a_selector_naming_no_speaker_fails_clearly(corral: Corral) -> None:
    chat = GroupChat("plan", [speaker("ana")], selector=lambda thread, names: "zed")
    handle = await corral.start(chat, "topic")
    await corral.run_until_idle()
    assert await steps_of(corral, handle.run_id) == [("chat.failed:plan", "failed")]
    error = await run_error(corral, handle.run_id)
    assert error["code"] == "output_invalid"
    assert "the selector chose 'zed', which is not one of its agents (ana)" in error["message"]


async def test_a_selector_agent_chooses_and_is_held_to_the_names(corral: Corral) -> None:
    picks = iter(['{"speaker": "zed"}', '{"speaker": "ben"}', '{"speaker": "ana"}'])

    def moderate(request: ModelRequest) -> str:
        return next(picks)

    moderator = Agent("moderator", model=ScriptedModel(rules=moderate))
    chat = GroupChat("plan", [speaker("ana"), speaker("ben")], selector=moderator, max_rounds=2)
    run_id, result = await hold(corral, chat, "topic")
    assert [m.author for m in result.thread[1:]] == ["ben", "ana"]
    assert await steps_of(corral, run_id) == [
        ("model:moderator", "succeeded"),  # "zed": refused by the contract, asked again
        ("model:moderator", "succeeded"),
        ("model:ben", "succeeded"),
        ("model:moderator", "succeeded"),
        ("model:ana", "succeeded"),
    ]
    assert result.usage.requests == 5


async def test_a_chat_inside_a_workflow(corral: Corral) -> None:
    chat = GroupChat("plan", [speaker("ana"), speaker("ben", agree_after=1)], until=agreed)

    @corral.workflow
    async def decide(ctx: RunContext, topic: str) -> str:
        result = await chat.run(ctx, topic)
        return result.thread[-1].content

    handle = await corral.start(decide, "lunch?")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == "ben: AGREED"
    assert await steps_of(corral, handle.run_id) == [
        ("model:ana", "succeeded"),
        ("model:ben", "succeeded"),
    ]


def test_malformed_chats_are_refused() -> None:
    with pytest.raises(AgentDefinitionError, match="has no agents"):
        GroupChat("c", [])
    with pytest.raises(AgentDefinitionError, match="two agents named ana"):
        GroupChat("c", [speaker("ana"), speaker("ana")])
    with pytest.raises(AgentDefinitionError, match="max_rounds and max_tokens must be >= 1"):
        GroupChat("c", [speaker("ana")], max_rounds=0)
    with pytest.raises(AgentDefinitionError, match="selector must be"):
        GroupChat("c", [speaker("ana")], selector="random")  # type: ignore[arg-type]


async def test_a_chat_resumed_after_a_child_run_replays_its_turns(corral: Corral) -> None:
    calls: list[str] = []

    def ana_rules(request: ModelRequest) -> Any:
        calls.append("ana")
        checked = [m.content for m in request.messages if m.role == "tool"]
        if not checked:
            return reply("", Call("ask_checker", {"task": "is Redis durable?"}))
        return f"ana: checked ({checked[0]})"

    checker = Agent("checker", model=ScriptedModel(["with AOF, yes"]))
    ana = Agent("ana", model=ScriptedModel(rules=ana_rules), delegates=[checker])
    chat = GroupChat("plan", [speaker("ben"), ana], max_rounds=3)
    run_id, result = await hold(corral, chat, "Redis for sessions?")
    assert [m.content for m in result.thread[1:]] == [
        "ben: idea 1",
        "ana: checked (with AOF, yes)",
        "ben: idea 2",
    ]
    assert result.contributions == {
        "ben": ["ben: idea 1", "ben: idea 2"],
        "ana": ["ana: checked (with AOF, yes)"],
    }
    assert calls == ["ana", "ana"]  # the parent waited for the child and replayed: no repeats
    assert await steps_of(corral, run_id) == [
        ("model:ben", "succeeded"),
        ("model:ana", "succeeded"),
        ("agent:checker", "succeeded"),
        ("agent:checker", "succeeded"),
        ("model:ana", "succeeded"),
        ("model:ben", "succeeded"),
    ]
