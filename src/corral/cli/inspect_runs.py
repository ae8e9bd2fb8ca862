"""`corral runs diff|compare|summary` and `corral replay tool`: reading a run after the fact.

Every one is a view of the journal (`corral.observe`): what a step added to the conversation,
where two runs went different ways, a plain-language account for a reviewer, and what a recorded
tool call sent — which `--execute` makes again, as a new governed run (`corral.agents.replay`).
Payloads printed are redacted as CORRAL_REDACT says (as `corral runs show` does). Reading needs
the viewer role once the tenant has principals; `replay tool --execute` the operator role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from corral import Workflow
from corral.agents import Agent
from corral.agents.replay import ReplayTask, agents_of, check_replayable, with_replay
from corral.cli.display import error_line
from corral.cli.exits import ExitCode, exit_code_for_status, fail, reporting_errors
from corral.cli.reading import reading
from corral.cli.remote import segment
from corral.cli.session import Settings, run_async
from corral.cli.shapes import decode, dumps, output_redactor, run_json
from corral.cli.waiting import execute_until_settled
from corral.control.app_loading import load_workflows
from corral.errors import RunNotFound
from corral.governance.identity import Principal, Role, authorize
from corral.models import resolve_model
from corral.observe.compare import compare_runs, divergence_json, render_divergence
from corral.observe.diffs import render_step_diff, step_diff, step_diff_json
from corral.observe.journal_view import RunView, StepView, load_run_view
from corral.observe.replay import (
    REPLAY_WORKFLOW,
    ReplayPlan,
    plan_replay,
    render_replay_plan,
    replay_plan_json,
)
from corral.observe.summaries import (
    ApprovalRecord,
    RunSummary,
    approvals_of,
    summarize,
    summary_json,
)
from corral.store import RunRecord, Store
from corral.store.scripts import Dialect, Script, ScriptFactory

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (see docs/cli.md).")]
RunIdArgument = Annotated[
    str, typer.Argument(metavar="RUN_ID", help="The run's id.", show_default=False)
]
StepArgument = Annotated[
    int,
    typer.Argument(
        metavar="STEP",
        min=1,
        help="The step's number (seq, as `corral runs show` lists it).",
        show_default=False,
    ),
]

DIFF_EPILOG = """\
Examples:

  corral runs diff 3f1c0d2e-... 4

  corral runs diff RUN_ID 4 --json | jq '.messages.added'

The conversation is rebuilt from the journal: the run's input, each model answer, each tool
result. Two things are not journaled: the feedback sent back after a refused final answer (the
step says so) and memory (there is no memory tier yet; it is reported as none).
"""

COMPARE_EPILOG = """\
Examples:

  corral runs compare RUN_A RUN_B

  corral runs compare RUN_A RUN_B --json | jq '{aspect, position}'

Steps are compared in journal order: name, then arguments, then result. Times, token usage and
the ids each run generates (its own id, its child runs', its approvals') are not compared. Both
runs must be of the same workflow (exit 2 otherwise).
"""

SUMMARY_EPILOG = """\
Examples:

  corral runs summary 3f1c0d2e-...

  corral runs summary RUN_ID --json | jq -r .text

  corral runs summary RUN_ID --polish openai:gpt-4.1-mini

Built from the journal and the approvals, the same way every time. --polish asks the model once
to rewrite it for readability; both texts are printed (the model sees the summary).
"""

REPLAY_EPILOG = """\
Examples:

  corral replay tool 3f1c0d2e-... 5

  corral --app myproject.agents replay tool RUN_ID 5 --execute

  corral replay tool RUN_ID 5 --json | jq .arguments

Without --execute nothing is sent: this shows the tool, the arguments (those a human approved,
if the call was approved), the agent, and the original result and policy decision. --execute
makes the call again as a new run of replay:tool (the original run is not changed), through the
agent's scopes, the tenant's policies, approvals, the kill switch and the budgets; it needs the
agent's code (--app) and the operator role. A replay waiting for an approval is resumed by a
worker that loads the same --app.

Exit codes with --execute: 0 the call was made and returned · 1 it failed, was denied or
rejected · 4 it waits (for an approval).
"""


def diff_command(
    ctx: typer.Context,
    run_id: RunIdArgument,
    seq: StepArgument,
    context: Annotated[
        int, typer.Option("--context", "-C", min=0, help="Lines of the conversation shown before.")
    ] = 3,
    json_output: JsonOption = False,
) -> None:
    """Show what step STEP of a run changed: the messages it added to the agent's conversation,
    and its memory change."""
    settings = Settings.of(ctx)
    if settings.server is not None:  # the API's JSON, with or without --json
        _print_remote(settings, f"/runs/{segment(run_id)}/steps/{seq}/diff")
        return

    async def read(store: Store) -> RunView:
        return await _view(store, settings, run_id, descendants=True)

    view = run_async(lambda: reading(settings, "see runs", read))
    with reporting_errors():
        try:
            diff = step_diff(view, seq)
        except KeyError:
            raise RunNotFound(
                f"run {run_id} has no step {seq} (it has {len(view.steps)})", run_id=run_id
            ) from None
    redactor = output_redactor()
    if json_output:
        typer.echo(dumps(redactor.redact_json(step_diff_json(diff))))
        return
    typer.echo(redactor.redact_text(render_step_diff(diff, context=context)))


def compare_command(
    ctx: typer.Context,
    run_a: Annotated[
        str, typer.Argument(metavar="RUN_A", help="One run's id.", show_default=False)
    ],
    run_b: Annotated[
        str, typer.Argument(metavar="RUN_B", help="The other run's id.", show_default=False)
    ],
    json_output: JsonOption = False,
) -> None:
    """Compare two runs of the same workflow: the first step where they differ, both sides
    shown; or that they are identical."""
    settings = Settings.of(ctx)
    if settings.server is not None:  # the API's JSON, with or without --json
        _print_remote(settings, f"/runs/{segment(run_a)}/compare/{segment(run_b)}")
        return

    async def read(store: Store) -> tuple[RunView, RunView]:
        first = await _view(store, settings, run_a, descendants=True)
        second = await _view(store, settings, run_b, descendants=True)
        return first, second

    first, second = run_async(lambda: reading(settings, "see runs", read))
    with reporting_errors():
        divergence = compare_runs(first, second)
    redactor = output_redactor()
    if json_output:
        typer.echo(dumps(redactor.redact_json(divergence_json(divergence))))
        return
    typer.echo(redactor.redact_text(render_divergence(divergence)))


def summary_command(
    ctx: typer.Context,
    run_id: RunIdArgument,
    polish: Annotated[
        str | None,
        typer.Option(
            "--polish",
            metavar="MODEL",
            help="Also have MODEL (provider:name) rewrite the summary for readability, once.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Tell what happened in a run, in plain language: what was asked, which agents worked on
    it, what they decided and why, what the tools changed, who approved what, what it cost and
    how it ended."""
    settings = Settings.of(ctx)
    if settings.server is not None:
        if polish is not None:
            fail("--polish calls a model from this machine; it has no remote mode (--server)")
        with reporting_errors(), settings.remote() as remote:
            answer = remote.get(f"/runs/{segment(run_id)}/summary")
        typer.echo(dumps(answer) if json_output else str(answer["text"]).rstrip())
        return
    with reporting_errors():
        model = resolve_model(polish) if polish is not None else None

    async def read(store: Store) -> RunSummary:
        view = await _view(store, settings, run_id, descendants=True)
        try:
            return await summarize(store, view, polish=model)
        finally:
            if model is not None:
                await model.aclose()

    summary = run_async(lambda: reading(settings, "see runs", read))
    redactor = output_redactor()
    if json_output:
        typer.echo(dumps(redactor.redact_json(summary_json(summary))))
        return
    typer.echo(redactor.redact_text(summary.text).rstrip())
    if summary.polished is not None:
        typer.echo(f"\nAs rewritten by {summary.polished_by}:\n")
        typer.echo(redactor.redact_text(summary.polished).rstrip())


def replay_tool_command(
    ctx: typer.Context,
    run_id: RunIdArgument,
    seq: StepArgument,
    execute: Annotated[
        bool,
        typer.Option(
            "--execute",
            help="Make the call again, as a new governed run (default: only show it).",
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=0,
            help="With --execute: keep executing the replay here through waits (an approval "
            "decided from another shell) for up to SECONDS.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show exactly what re-running the tool call of step STEP would send; with --execute, make
    it again as a new run of replay:tool, under the same governance as any call."""
    settings = Settings.of(ctx)
    redactor = output_redactor()
    if not execute:

        async def read(store: Store) -> ReplayPlan:
            return plan_replay(await _view(store, settings, run_id, descendants=False), seq)

        plan = run_async(lambda: reading(settings, "see runs", read))
        if json_output:
            typer.echo(dumps(redactor.redact_json(replay_plan_json(plan))))
            return
        typer.echo(redactor.redact_text(render_replay_plan(plan)))
        return
    with reporting_errors():
        workflows = load_workflows(settings.app)
        agents = agents_of(workflows)
    replayed = run_async(lambda: _execute(settings, run_id, seq, workflows, agents, timeout))
    if json_output:
        typer.echo(dumps(redactor.redact_json(_replayed_json(replayed))))
    else:
        typer.echo(redactor.redact_text(_render_replayed(replayed)))
    raise typer.Exit(_replay_exit_code(replayed))


@dataclass(frozen=True)
class Replayed:
    """What `replay tool --execute` has to report: the plan, and the replay run as it settled."""

    plan: ReplayPlan
    run: RunRecord
    view: RunView
    approvals: list[ApprovalRecord]

    @property
    def tool_step(self) -> StepView | None:
        """The replay run's last tool step: the call (after any approval)."""
        steps = [s for s in self.view.steps if s.category == "tool"]
        return steps[-1] if steps else None


async def _execute(
    settings: Settings,
    run_id: str,
    seq: int,
    workflows: list[Workflow[Any, Any]],
    agents: dict[str, Agent[Any]],
    timeout: float | None,
) -> Replayed:
    async with settings.corral(with_replay(workflows), existing=True) as corral:
        await corral.store.read_script(_allowed(settings, "operator", "replay tool calls"))
        plan = plan_replay(await _view(corral.store, settings, run_id, descendants=False), seq)
        task = ReplayTask.of(plan)
        check_replayable(task, agents)  # before starting: a mistake is an error, not a run
        handle = await corral.start(REPLAY_WORKFLOW, task)
        outcome = await execute_until_settled(corral, handle.run_id, timeout=timeout)
        view = await load_run_view(corral.store, handle.run_id, descendants=False)
        assert view is not None
        approvals = await corral.store.read_script(lambda d: approvals_of([handle.run_id]))
        return Replayed(plan, outcome.run, view, approvals)


def _replayed_json(replayed: Replayed) -> dict[str, Any]:
    step = replayed.tool_step
    return {
        "replay_of": {"run_id": replayed.plan.run_id, "step": replayed.plan.seq},
        "run": run_json(replayed.run),
        "tool_step": None
        if step is None
        else {
            "seq": step.seq,
            "status": step.status,
            "outcome": step.result.get("status") if isinstance(step.result, dict) else None,
            "value": step.tool_value,
            "decision": step.decision,
            "error": None
            if step.error is None
            else {k: v for k, v in step.error.items() if k not in ("traceback", "module")},
        },
        "call": {"outcome": _call_outcome(replayed)[0], "returned": _call_outcome(replayed)[1]},
        "pending_approvals": [
            {"approval_id": a.approval_id, "tool": a.tool, "approvers": a.approvers}
            for a in replayed.approvals
            if a.status == "pending"
        ],
        "original": replay_plan_json(replayed.plan)["original"],
    }


def _call_outcome(replayed: Replayed) -> tuple[str, bool]:
    """What became of the replayed call, in words, and whether it was made and returned."""
    step, run = replayed.tool_step, replayed.run
    if step is None:
        return f"not made: {error_line(run.error)}" if run.error else "not made", False
    if step.error is not None:
        return f"failed: {step.error.get('type')}: {step.error.get('message')}", False
    if isinstance(step.result, dict) and step.result.get("status") == "approval_required":
        if not run.finished:
            return "waits for a human's approval (not made yet)", False
        told = _decoded(run.result).get("content") if run.result else None
        return f"not made: {told or error_line(run.error)}", False
    return f"returned {_compact(step.tool_value)}", True


def _replay_exit_code(replayed: Replayed) -> ExitCode:
    """0 the call was made and returned; 1 it failed, was denied or rejected; 4 it waits."""
    status = exit_code_for_status(replayed.run.status)
    if status != ExitCode.OK:
        return status
    return ExitCode.OK if _call_outcome(replayed)[1] else ExitCode.RUN_DID_NOT_SUCCEED


def _render_replayed(replayed: Replayed) -> str:
    plan, run = replayed.plan, replayed.run
    if plan.error is not None:
        before = f"failed: {plan.error.get('type')}: {plan.error.get('message')}"
    else:
        before = f"returned {_compact(plan.value)}"
    lines = [
        f"replayed step {plan.seq} of run {plan.run_id} ({plan.tool}) as run {run.run_id}: "
        f"{run.status}",
        f"  arguments:  {_compact(plan.arguments)}",
        f"  now:        {_call_outcome(replayed)[0]}",
        f"  originally: {before}",
    ]
    for approval in replayed.approvals:
        if approval.status == "pending":
            lines.append(
                f"  waiting for approval {approval.approval_id} by "
                f"{', '.join(approval.approvers)}: `corral approvals approve "
                f"{approval.approval_id} --reason ...`; a worker with the same --app resumes it"
            )
    lines.append(f"  journal:    corral runs show {run.run_id}")
    return "\n".join(lines)


def _decoded(text: str) -> dict[str, Any]:
    value = decode(text)
    return value if isinstance(value, dict) else {}


# -- shared --------------------------------------------------------------------------------------


def _allowed(settings: Settings, role: Role, action: str) -> ScriptFactory[Principal | None]:
    """A script refusing (NotAuthorized) a principal without `role` in the tenant."""

    def script(dialect: Dialect) -> Script[Principal | None]:
        return (yield from authorize(settings.tenant, settings.principal, role, action=action))

    return script


async def _view(store: Store, settings: Settings, run_id: str, *, descendants: bool) -> RunView:
    """The run and its journal; another tenant's run is as missing as an unknown one."""
    view = await load_run_view(store, run_id, descendants=descendants)
    if view is None or view.run.tenant != settings.tenant:
        raise RunNotFound(f"no run {run_id!r} in {settings.database_label}", run_id=run_id)
    return view


def _print_remote(settings: Settings, path: str) -> None:
    with reporting_errors(), settings.remote() as remote:
        typer.echo(dumps(remote.get(path)))


def _compact(value: Any, limit: int = 300) -> str:
    text = dumps(value).replace("\n", " ") if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def register(app: typer.Typer, runs_app: typer.Typer) -> None:
    """Add `runs diff`, `runs compare`, `runs summary` to `runs_app`, and `replay` to `app`."""
    runs_app.command("diff", epilog=DIFF_EPILOG)(diff_command)
    runs_app.command("compare", epilog=COMPARE_EPILOG)(compare_command)
    runs_app.command("summary", epilog=SUMMARY_EPILOG)(summary_command)
    replay_app = typer.Typer(
        name="replay",
        help="Replay what a run recorded: show a tool call exactly, or make it again (--execute).",
        no_args_is_help=True,
        rich_markup_mode="markdown",
    )
    replay_app.command("tool", epilog=REPLAY_EPILOG)(replay_tool_command)
    app.add_typer(replay_app, name="replay")
