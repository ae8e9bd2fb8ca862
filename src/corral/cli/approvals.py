"""`corral approvals list|show|approve|reject`: the human side of approval gates.

A run stopped at an approval gate waits for a decision made here (or through the API). `show`
prints the exact tool call the agent wants to make — the tool and its arguments as the run will
pass them, never a summary — with the policy and rule that asked for approval, who may decide,
and the deadline. `approve` (optionally with edited arguments, checked against the tool's schema)
and `reject` decide once: if someone else (or the deadline) decided first, the command says who
and when and exits 1.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from corral.cli.display import console, status_text, when
from corral.cli.exits import ExitCode, print_error, reporting_errors
from corral.cli.inputs import parse_json
from corral.cli.remote import segment
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, iso
from corral.errors import InvalidInput
from corral.governance.approvals import (
    APPROVAL_STATUSES,
    AlreadyDecided,
    ApprovalDecision,
    ApprovalNotFound,
    ApprovalRequest,
    ApprovalStatus,
    decide,
    get_approval,
    list_approvals,
)

EPILOG = """\
Examples:

  corral approvals list

  corral approvals show APPROVAL_ID

  corral --as ada approvals approve APPROVAL_ID --reason "customer verified by phone"

  corral --as ada approvals approve APPROVAL_ID --edit '{"amount_cents": 40000}' --reason "cap"

  corral --as ada approvals reject APPROVAL_ID --reason "duplicate refund"

You decide as --as PRINCIPAL (CORRAL_PRINCIPAL; default: your login name): a human principal of
the tenant with the role approver or admin, named in (or in a group of) the request's approvers.

Exit codes: 0 done · 1 already decided (by someone else or by its deadline) · 2 bad input, not
authorised, or no such approval · 3 database unusable.
"""

approvals_app = typer.Typer(
    name="approvals",
    help="List the tool calls waiting for a human, show one exactly, approve or reject it.",
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

STATUS_CHOICES = (*APPROVAL_STATUSES, "all")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (see docs/cli.md).")]
ApprovalIdArgument = Annotated[
    str,
    typer.Argument(
        metavar="APPROVAL_ID", help="The approval's id (see `approvals list`).", show_default=False
    ),
]
ReasonOption = Annotated[
    str,
    typer.Option(
        "--reason",
        "-r",
        metavar="TEXT",
        help="Why (recorded with the decision in the audit log).",
        show_default=False,
    ),
]


# -- shapes ------------------------------------------------------------------------------------


def approval_json(request: ApprovalRequest) -> dict[str, Any]:
    """An approval request as `--json` prints it (timestamps ISO 8601 UTC)."""
    return {
        "approval_id": request.approval_id,
        "tenant": request.tenant,
        "status": request.status,
        "run_id": request.run_id,
        "step_seq": request.step_seq,
        "agent": request.agent,
        "tool": request.tool,
        "arguments": request.arguments,
        "arguments_hash": request.arguments_hash,
        "parameters": request.parameters,
        "reason": request.reason,
        "policy": request.policy,
        "policy_version": request.policy_version,
        "rule": request.rule,
        "approvers": list(request.approvers),
        "deadline": iso(request.deadline),
        "on_deadline": request.on_deadline,
        "escalate_to": list(request.escalate_to),
        "escalations": request.escalations,
        "decided_by": request.decided_by,
        "decided_at": iso(request.decided_at),
        "decision_reason": request.decision_reason,
        "edited_arguments": request.edited_arguments,
        "created_at": iso(request.created_at),
    }


def decision_json(decision: ApprovalDecision) -> dict[str, Any]:
    data = decision.model_dump(mode="json")
    data["decided_at"] = iso(decision.decided_at)
    return data


def _pretty(value: Any) -> str:
    return dumps(value)


def _policy_line(request: ApprovalRequest) -> str:
    if request.policy is None:
        return "— (asked for by the tool or agent)"
    version = f"@{request.policy_version}" if request.policy_version is not None else ""
    rule = f", rule {request.rule}" if request.rule else ""
    return f"{request.policy}{version}{rule}"


def approvals_table(requests: list[ApprovalRequest]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("approval id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("tool", overflow="fold")
    table.add_column("agent", overflow="fold")
    table.add_column("approvers", overflow="fold")
    table.add_column("deadline", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for request in requests:
        table.add_row(
            Text(request.approval_id),
            status_text(request.status),
            Text(request.tool),
            Text(request.agent or "—"),
            Text(", ".join(request.approvers)),
            Text(when(request.deadline)),
            Text(when(request.created_at)),
        )
    return table


def approval_detail(request: ApprovalRequest) -> RenderableType:
    """`approvals show`: the exact call first, then why, who, and by when."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()

    def row(label: str, value: str | Text) -> None:
        grid.add_row(label, value if isinstance(value, Text) else Text(value))

    row("approval", request.approval_id)
    row("status", status_text(request.status))
    row("tool", request.tool)
    row("arguments", _pretty(request.arguments))
    row("arguments hash", request.arguments_hash)
    row("agent", request.agent or "—")
    row("run", f"{request.run_id} (step {request.step_seq})")
    row("tenant", request.tenant)
    row("reason", request.reason or "—")
    row("policy", _policy_line(request))
    row("approvers", ", ".join(request.approvers))
    deadline = when(request.deadline) if request.deadline is not None else "none (waits for ever)"
    row("deadline", deadline)
    on_deadline: str = request.on_deadline
    if request.on_deadline == "escalate":
        on_deadline += f" to {', '.join(request.escalate_to) or '—'}"
    row("at the deadline", on_deadline)
    if request.escalations:
        row("escalations", str(request.escalations))
    row("created", when(request.created_at))
    if not request.pending:
        row("decided by", request.decided_by or "—")
        row("decided at", when(request.decided_at))
        row("decision reason", request.decision_reason or "—")
        if request.edited_arguments is not None:
            row("edited arguments", _pretty(request.edited_arguments))
    parts: list[RenderableType] = [grid]
    if request.pending:
        parts.append(
            Text(
                f"\ndecide with: corral approvals approve {request.approval_id} --reason TEXT"
                f"  (or reject)",
                style="dim",
            )
        )
    return Group(*parts)


# -- commands ----------------------------------------------------------------------------------


def _check_status(value: str) -> str:
    if value not in STATUS_CHOICES:
        raise typer.BadParameter(
            f"unknown status {value!r}; valid statuses: {', '.join(STATUS_CHOICES)}"
        )
    return value


@approvals_app.command(
    "list",
    epilog="Examples:\n\n  corral approvals list\n\n  corral approvals list --status all --json",
)
def list_command(
    ctx: typer.Context,
    status: Annotated[
        str,
        typer.Option(
            "--status",
            "-s",
            metavar="STATUS",
            callback=_check_status,
            help=f"Only requests in this status: {', '.join(STATUS_CHOICES)}.",
        ),
    ] = "pending",
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many requests.")
    ] = 100,
    json_output: JsonOption = False,
) -> None:
    """List approval requests of the tenant, newest first (pending ones by default)."""
    settings = Settings.of(ctx)
    wanted = None if status == "all" else cast(ApprovalStatus, status)

    async def fetch() -> list[ApprovalRequest]:
        async with settings.corral(existing=True) as corral:
            return await corral.store.read_script(
                lambda dialect: list_approvals(settings.tenant, wanted, limit)
            )

    if settings.server is not None:
        requests = _list_remote(settings, wanted, limit)
    else:
        requests = run_async(fetch)
    if json_output:
        typer.echo(dumps({"approvals": [approval_json(request) for request in requests]}))
        return
    if not requests:
        which = "" if status == "all" else f"{status} "
        tenant = "the key's tenant" if settings.server else f"tenant {settings.tenant!r}"
        typer.echo(f"no {which}approvals in {tenant}", err=True)
        return
    console().print(approvals_table(requests))


def _list_remote(
    settings: Settings, status: ApprovalStatus | None, limit: int
) -> list[ApprovalRequest]:
    """The server's inbox; `--status all` is one list per status (the API filters by one),
    merged newest first."""
    statuses = APPROVAL_STATUSES if status is None else (status,)
    with reporting_errors(), settings.remote() as remote:
        found = [
            ApprovalRequest.model_validate(item)
            for one in statuses
            for item in remote.items("/approvals", {"status": one}, limit=limit)
        ]
    found.sort(key=lambda request: (request.created_at, request.approval_id), reverse=True)
    return found[:limit]


def _fetch_remote(settings: Settings, approval_id: str) -> ApprovalRequest:
    with reporting_errors(), settings.remote() as remote:
        return ApprovalRequest.model_validate(remote.get(f"/approvals/{segment(approval_id)}"))


async def _fetch(settings: Settings, approval_id: str) -> ApprovalRequest:
    async with settings.corral(existing=True) as corral:
        request = await corral.store.read_script(lambda dialect: get_approval(approval_id))
    if request is None or request.tenant != settings.tenant:
        raise ApprovalNotFound(
            f"no approval {approval_id!r} in tenant {settings.tenant!r}",
            approval_id=approval_id,
            tenant=settings.tenant,
        )
    return request


@approvals_app.command(
    "show",
    epilog="Examples:\n\n  corral approvals show APPROVAL_ID\n\n"
    "  corral approvals show APPROVAL_ID --json | jq .arguments",
)
def show_command(
    ctx: typer.Context, approval_id: ApprovalIdArgument, json_output: JsonOption = False
) -> None:
    """Show a request: the exact tool call and its arguments, the policy and rule that asked
    for approval and why, who may decide, the deadline and what happens then; and the decision,
    once made."""
    settings = Settings.of(ctx)
    if settings.server is not None:
        request = _fetch_remote(settings, approval_id)
    else:
        request = run_async(lambda: _fetch(settings, approval_id))
    if json_output:
        typer.echo(dumps(approval_json(request)))
        return
    console().print(approval_detail(request))


def _decide(
    ctx: typer.Context,
    approval_id: str,
    *,
    approve: bool,
    reason: str,
    edit: str | None,
    json_output: bool,
) -> None:
    settings = Settings.of(ctx)
    with reporting_errors():
        edited = None if edit is None else parse_json(edit, source="--edit")
        if edited is not None and not isinstance(edited, dict):
            raise InvalidInput(
                "--edit must be a JSON object of the tool's arguments, e.g. "
                """'{"amount_cents": 40000}'""",
                source="--edit",
            )

    async def act() -> ApprovalDecision | AlreadyDecided:
        await _fetch(settings, approval_id)  # the tenant check
        async with settings.corral(existing=True) as corral:
            try:
                return await decide(
                    corral,
                    approval_id,
                    approve=approve,
                    principal=settings.principal,
                    reason=reason,
                    edited_arguments=edited,
                )
            except AlreadyDecided as lost:
                return lost

    if settings.server is not None:
        body = {"approve": approve, "reason": reason, "arguments": edited}
        with reporting_errors(), settings.remote() as remote:
            answer = remote.post(f"/approvals/{segment(approval_id)}/decision", body)
        outcome: ApprovalDecision | AlreadyDecided = ApprovalDecision.model_validate(answer)
    else:
        outcome = run_async(act)
    if isinstance(outcome, AlreadyDecided):
        print_error(
            outcome.message,
            code=outcome.code,
            hint=f"see the decision with `corral approvals show {approval_id}`",
        )
        raise typer.Exit(ExitCode.RUN_DID_NOT_SUCCEED)
    if json_output:
        typer.echo(dumps(decision_json(outcome)))
        return
    verb = "approved" if outcome.approved else "rejected"
    edited_note = " with edited arguments" if outcome.edited else ""
    typer.echo(
        f"{verb} {approval_id}{edited_note} as {outcome.decided_by}; a worker resumes the run"
    )


@approvals_app.command(
    "approve",
    epilog="Examples:\n\n"
    '  corral --as ada approvals approve APPROVAL_ID --reason "verified"\n\n'
    "  corral --as ada approvals approve APPROVAL_ID --edit '{\"amount_cents\": 40000}'"
    ' --reason "capped at $400"',
)
def approve_command(
    ctx: typer.Context,
    approval_id: ApprovalIdArgument,
    reason: ReasonOption,
    edit: Annotated[
        str | None,
        typer.Option(
            "--edit",
            metavar="JSON",
            help="Approve with these arguments instead (a JSON object, checked against the "
            "tool's schema; the run calls the tool with them).",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Approve a pending request (as --as PRINCIPAL); the run resumes and makes the call."""
    _decide(ctx, approval_id, approve=True, reason=reason, edit=edit, json_output=json_output)


@approvals_app.command(
    "reject",
    epilog='Example:\n\n  corral --as ada approvals reject APPROVAL_ID --reason "duplicate"',
)
def reject_command(
    ctx: typer.Context,
    approval_id: ApprovalIdArgument,
    reason: ReasonOption,
    json_output: JsonOption = False,
) -> None:
    """Reject a pending request (as --as PRINCIPAL); the run resumes without making the call."""
    _decide(ctx, approval_id, approve=False, reason=reason, edit=None, json_output=json_output)


def register(app: typer.Typer) -> None:
    """Add `corral approvals` to `app`."""
    app.add_typer(approvals_app, name="approvals")
