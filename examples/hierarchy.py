"""A hierarchy: supervisors of supervisors, through `delegates`, bounded by `max_depth`.

    ceo ─┬─ research_lead ── searcher
         └─ writing_lead ─── editor ──(intern: a 4th level, refused)

Each `ask_<name>` is a child run one level deeper. With `max_depth=2`, three levels run; when the
editor (already two levels down) asks the intern, the tool call is refused and the refusal goes
back to the editor's model as the call's result, so it carries on without.

    python examples/hierarchy.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from corral import Corral
from corral.agents import Agent
from corral.models import Call, ModelRequest, ScriptedModel, reply


def manager(name: str, asks: dict[str, str], reports: list[Agent[Any]]) -> Agent[Any]:
    """An agent that gives each report a task (in parallel), then sums up the answers."""

    def rules(request: ModelRequest) -> Any:
        answers = [m.content for m in request.messages if m.role == "tool"]
        if not answers:
            return reply("", *(Call(f"ask_{who}", {"task": task}) for who, task in asks.items()))
        if any("DepthLimitExceeded" in answer for answer in answers):
            return f"{name}: the intern was out of reach (refused), so I fixed the commas myself"
        return f"{name}: " + " + ".join(answers)

    return Agent(
        name,
        instructions=f"You are the {name}. Delegate, then report.",
        description=f"the {name}",
        model=ScriptedModel(rules=rules),
        delegates=reports,
        max_depth=2,
    )


intern = Agent("intern", model=ScriptedModel(["commas fixed"]), description="an intern")
searcher = Agent("searcher", model=ScriptedModel(["3 sources on tides"]), description="finds")
editor = manager("editor", {"intern": "fix the commas"}, [intern])
research_lead = manager("research_lead", {"searcher": "find sources on tides"}, [searcher])
writing_lead = manager("writing_lead", {"editor": "edit the draft"}, [editor])
ceo = manager(
    "ceo",
    {"research_lead": "research tides", "writing_lead": "write the article"},
    [research_lead, writing_lead],
)


async def print_journal(corral: Corral, run_id: str, indent: str = "  ") -> None:
    """A run's journal, with each child run's journal under the step that started it."""
    children = {c.parent_step_seq: c for c in await corral.list_runs(parent_run_id=run_id)}
    for step in await corral.journal(run_id):
        print(f"{indent}{step.seq:>2} {step.kind:<12} {step.name:<24} {step.status}")
        child = children.get(step.seq) if step.kind == "child.start" else None
        if child is not None:
            await print_journal(corral, child.run_id, indent + "     ")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Corral(f"sqlite:///{Path(tmp) / 'corral.db'}") as corral:
            handle = await corral.start(ceo, "An article on tides")
            await corral.run_until_idle()
            print("Result:", await handle.wait_for_result())
            await print_journal(corral, handle.run_id)


if __name__ == "__main__":
    asyncio.run(main())
