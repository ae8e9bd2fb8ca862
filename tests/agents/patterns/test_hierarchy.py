"""Hierarchy: supervisors of supervisors through `delegates`, bounded by `max_depth`.

The tree: ceo → (research_lead, writing_lead) → (searcher; editor). Three levels run; the
editor's attempt to go one level further (intern) is refused, and the refusal goes back to the
editor's model as the tool call's result.
"""

from __future__ import annotations

import json
from typing import Any

from corral import Corral
from corral.agents import Agent, AgentTask
from corral.models import Call, ModelRequest, ScriptedModel, reply

from .harness import steps_of

told: list[str] = []


def manager(name: str, asks: list[tuple[str, str]], *, delegates: list[Agent[Any]]) -> Agent[Any]:
    """Asks its reports (in parallel), then sums up what they said."""

    def rules(request: ModelRequest) -> Any:
        results = [m.content for m in request.messages if m.role == "tool"]
        if not results:
            return reply("", *(Call(f"ask_{who}", {"task": task}) for who, task in asks))
        told.extend(results)
        return f"{name} reports: " + " | ".join(results)

    return Agent(
        name,
        model=ScriptedModel(rules=rules),
        delegates=delegates,
        max_depth=2,
        description=f"{name} manages part of the work",
    )


def build_tree() -> Agent[Any]:
    intern = Agent("intern", model=ScriptedModel(["intern did it"]))
    searcher = Agent("searcher", model=ScriptedModel(["3 sources found"]))
    editor = manager("editor", [("intern", "fix the commas")], delegates=[intern])
    research = manager("research_lead", [("searcher", "find sources")], delegates=[searcher])
    writing = manager("writing_lead", [("editor", "edit the draft")], delegates=[editor])
    return manager(
        "ceo",
        [("research_lead", "research tides"), ("writing_lead", "write it up")],
        delegates=[research, writing],
    )


async def test_three_levels_run_and_a_fourth_is_refused(corral: Corral) -> None:
    told.clear()
    ceo = build_tree()
    handle = await corral.start(ceo, "An article on tides")
    await corral.run_until_idle()
    result = await handle.wait_for_result()
    assert result.startswith("ceo reports: research_lead reports: 3 sources found | writing_lead")

    assert await steps_of(corral, handle.run_id) == [
        ("model:ceo", "succeeded"),
        ("agent:research_lead", "succeeded"),
        ("agent:research_lead", "succeeded"),
        ("agent:writing_lead", "succeeded"),
        ("agent:writing_lead", "succeeded"),
        ("model:ceo", "succeeded"),
    ]
    level1 = {r.workflow: r for r in await corral.list_runs(parent_run_id=handle.run_id)}
    assert await steps_of(corral, level1["agent:research_lead"].run_id) == [
        ("model:research_lead", "succeeded"),
        ("agent:searcher", "succeeded"),
        ("agent:searcher", "succeeded"),
        ("model:research_lead", "succeeded"),
    ]
    writing_id = level1["agent:writing_lead"].run_id
    assert await steps_of(corral, writing_id) == [
        ("model:writing_lead", "succeeded"),
        ("agent:editor", "succeeded"),
        ("agent:editor", "succeeded"),
        ("model:writing_lead", "succeeded"),
    ]
    (editor_run,) = await corral.list_runs(parent_run_id=writing_id)
    assert AgentTask.model_validate_json(editor_run.input).depth == 2
    assert await steps_of(corral, editor_run.run_id) == [
        ("model:editor", "succeeded"),
        ("tool:ask_intern", "failed"),  # a 4th level: refused, no child run
        ("model:editor", "succeeded"),
    ]
    assert await corral.list_runs(parent_run_id=editor_run.run_id) == []
    refusal = (await corral.journal(editor_run.run_id))[1]
    assert json.loads(refusal.error or "")["code"] == "depth_limit"
    # The refusal went back to the editor's model, which answered with it.
    assert any("cannot delegate to 'intern'" in text and "max_depth=2" in text for text in told)
    assert "editor reports: Error (DepthLimitExceeded)" in result


async def test_a_shallower_limit_stops_the_tree_higher(corral: Corral) -> None:
    leaf = Agent("leaf", model=ScriptedModel(["leaf"]))
    middle = Agent(
        "middle",
        model=ScriptedModel([reply("", Call("ask_leaf", {"task": "x"})), "middle done"]),
        delegates=[leaf],
        max_depth=1,
    )
    top = Agent(
        "top",
        model=ScriptedModel([reply("", Call("ask_middle", {"task": "y"})), "top done"]),
        delegates=[middle],
        max_depth=1,
    )
    handle = await corral.start(top, "go")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == "top done"
    (middle_run,) = await corral.list_runs(parent_run_id=handle.run_id)
    assert await steps_of(corral, middle_run.run_id) == [
        ("model:middle", "succeeded"),
        ("tool:ask_leaf", "failed"),
        ("model:middle", "succeeded"),
    ]
