"""`corral policy apply|list|show|diff|rollback|test`: the tenant's versioned policies.

`apply` checks a YAML document before writing anything: a syntax error, an unknown field or an
invalid CEL condition is reported with the file and line (exit 2), and the active version stays.
Every change is a new version (rollbacks too) and is audited with `--as` as the actor.
`test` runs policy test cases (given this call, expect this effect) against policy files or
against the tenant's active policies, for CI.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from corral.cli.display import console, when
from corral.cli.exits import ExitCode, fail, reporting_errors
from corral.cli.remote import segment, timestamp
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, iso
from corral.governance.decisions import Decision
from corral.governance.identity import authorize
from corral.governance.policies import PolicySet, load_yaml_model, parse_policy
from corral.governance.policy_store import (
    AppliedPolicy,
    PolicySummary,
    StoredPolicy,
    apply_policy,
    diff_policies,
    get_policy,
    list_policies,
    load_policy_set,
    rollback_policy,
)
from corral.governance.policy_tests import Case, PolicyTests, run_cases

EPILOG = """\
Examples:

  corral --as ada policy apply policies/support.yaml

  corral policy list

  corral policy show support --version 1 > support-v1.yaml

  corral policy diff support 1 2

  corral --as ada policy rollback support 1

  corral policy test examples/policies/support_tests.yaml

A policy with a syntax error, an unknown field or an invalid condition is refused with its file
and line (exit 2); the active version stays. Reference: docs/governance.md
"""

policy_app = typer.Typer(
    name="policy",
    help="Versioned policies: apply, list, show, diff, roll back, and test them.",
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (see docs/cli.md).")]
NameArgument = Annotated[
    str, typer.Argument(metavar="NAME", help="The policy's name.", show_default=False)
]
FileArgument = Annotated[
    Path, typer.Argument(metavar="FILE", help="A YAML file.", show_default=False)
]


def _actor(settings: Settings) -> str:
    return f"human:{settings.principal}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"{path}: cannot be read: {error}")


def _applied_json(applied: AppliedPolicy) -> dict[str, Any]:
    return {"policy": applied.name, "version": applied.version, "changed": applied.changed}


def _stored_json(stored: StoredPolicy) -> dict[str, Any]:
    return {
        "policy": stored.name,
        "version": stored.version,
        "latest_version": stored.latest_version,
        "digest": stored.digest,
        "created_at": iso(stored.created_at),
        "created_by": stored.created_by,
        "restored_from": stored.restored_from,
        "document": stored.document,
    }


def _summary_json(summary: PolicySummary) -> dict[str, Any]:
    return {
        "policy": summary.name,
        "version": summary.version,
        "versions": summary.versions,
        "description": summary.description,
        "digest": summary.digest,
        "created_at": iso(summary.created_at),
        "created_by": summary.created_by,
        "restored_from": summary.restored_from,
    }


# -- apply, list, show, diff, rollback --------------------------------------------------------


@policy_app.command(
    "apply",
    epilog="Examples:\n\n  corral --as ada policy apply policies/support.yaml\n\n"
    "  corral --tenant acme policy apply refunds.yaml --json\n\n"
    "Applying the same text again adds no version. Exit 2 on an invalid document (file, line, "
    "reason): nothing is written and the active version stays.",
)
def apply_command(ctx: typer.Context, file: FileArgument, json_output: JsonOption = False) -> None:
    """Check a policy document and make it the active version of its name (audited)."""
    settings = Settings.of(ctx)
    text = _read(file)
    with reporting_errors():
        parse_policy(text, source=str(file))  # refuse a bad file before touching the database

    async def apply() -> AppliedPolicy:
        async with settings.corral() as corral:
            await corral.store.read_script(
                lambda d: authorize(
                    settings.tenant, settings.principal, "admin", action="apply policies"
                )
            )
            return await apply_policy(
                corral.store,
                settings.tenant,
                text,
                source=str(file),
                actor=_actor(settings),
                now=corral.clock.now(),
            )

    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            answer = remote.post("/policies", {"document": text, "source": str(file)})
        applied = AppliedPolicy(answer["name"], answer["version"], answer["changed"])
    else:
        applied = run_async(apply)
    tenant = "the key's tenant" if settings.server else f"tenant {settings.tenant}"
    if json_output:
        typer.echo(dumps(_applied_json(applied)))
    elif applied.changed:
        typer.echo(f"applied policy {applied.name}: version {applied.version} is active ({tenant})")
    else:
        typer.echo(
            f"policy {applied.name} unchanged: version {applied.version} is already this text"
        )


@policy_app.command(
    "list", epilog="Examples:\n\n  corral policy list\n\n  corral --tenant acme policy list --json"
)
def list_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the tenant's policies: name, active version, number of versions, who applied it."""
    settings = Settings.of(ctx)

    async def fetch() -> list[PolicySummary]:
        async with settings.corral(existing=True) as corral:
            return await list_policies(corral.store, settings.tenant)

    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            summaries = [_summary_of(answer) for answer in remote.get("/policies")]
    else:
        summaries = run_async(fetch)
    if json_output:
        typer.echo(dumps({"policies": [_summary_json(s) for s in summaries]}))
        return
    if not summaries:
        tenant = "the key's tenant" if settings.server else f"tenant {settings.tenant}"
        typer.echo(
            f"no policies in {tenant} (apply one with `corral policy apply FILE`)",
            err=True,
        )
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("policy", "version", "versions", "applied (UTC)", "by", "description"):
        table.add_column(column)
    for summary in summaries:
        version = str(summary.version)
        if summary.restored_from is not None:
            version += f" (= v{summary.restored_from})"
        table.add_row(
            summary.name,
            version,
            str(summary.versions),
            when(summary.created_at),
            summary.created_by,
            summary.description,
        )
    console().print(table)


@policy_app.command(
    "show",
    epilog="Examples:\n\n  corral policy show support\n\n"
    "  corral policy show support --version 1 > support-v1.yaml\n\n"
    "  corral policy show support --json | jq -r .document",
)
def show_command(
    ctx: typer.Context,
    name: NameArgument,
    version: Annotated[
        int | None,
        typer.Option("--version", "-v", min=1, metavar="N", help="This version (default: active)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Print a policy's YAML exactly as applied (the header about it goes to stderr)."""
    settings = Settings.of(ctx)

    async def fetch() -> StoredPolicy:
        async with settings.corral(existing=True) as corral:
            return await get_policy(corral.store, settings.tenant, name, version)

    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            stored = _stored_of(remote.get(f"/policies/{segment(name)}", {"version": version}))
    else:
        stored = run_async(fetch)
    if json_output:
        typer.echo(dumps(_stored_json(stored)))
        return
    state = "active" if stored.version == stored.latest_version else "not active"
    restored = "" if stored.restored_from is None else f", restored from v{stored.restored_from}"
    typer.echo(
        f"# policy {stored.name} v{stored.version} of {stored.latest_version} ({state}{restored}),"
        f" applied {when(stored.created_at)} by {stored.created_by}",
        err=True,
    )
    typer.echo(stored.document, nl=not stored.document.endswith("\n"))


@policy_app.command(
    "diff",
    epilog="Examples:\n\n  corral policy diff support 1 2\n\n  corral policy diff support 1 3",
)
def diff_command(
    ctx: typer.Context,
    name: NameArgument,
    a: Annotated[int, typer.Argument(metavar="A", min=1, help="The older version.")],
    b: Annotated[int, typer.Argument(metavar="B", min=1, help="The newer version.")],
) -> None:
    """Show what changed between two versions of a policy, as a unified diff."""
    settings = Settings.of(ctx)

    async def fetch() -> tuple[StoredPolicy, StoredPolicy]:
        async with settings.corral(existing=True) as corral:
            first = await get_policy(corral.store, settings.tenant, name, a)
            second = await get_policy(corral.store, settings.tenant, name, b)
            return first, second

    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            answer = remote.get(f"/policies/{segment(name)}/diff", {"from": a, "to": b})
        text = answer["diff"]
    else:
        first, second = run_async(fetch)
        text = diff_policies(
            first.document, second.document, a_label=f"{name}@v{a}", b_label=f"{name}@v{b}"
        )
    if not text:
        typer.echo(f"versions {a} and {b} of policy {name} are the same", err=True)
        return
    typer.echo(text, nl=False)


@policy_app.command(
    "rollback",
    epilog="Example:\n\n  corral --as ada policy rollback support 1\n\n"
    "The rollback is a new version with version N's text (history is never rewritten).",
)
def rollback_command(
    ctx: typer.Context,
    name: NameArgument,
    version: Annotated[int, typer.Argument(metavar="N", min=1, help="The version to restore.")],
    json_output: JsonOption = False,
) -> None:
    """Make an earlier version of a policy active again (audited as policy.rolled_back)."""
    settings = Settings.of(ctx)

    async def rollback() -> AppliedPolicy:
        async with settings.corral(existing=True) as corral:
            await corral.store.read_script(
                lambda d: authorize(
                    settings.tenant, settings.principal, "admin", action="roll policies back"
                )
            )
            return await rollback_policy(
                corral.store,
                settings.tenant,
                name,
                version,
                actor=_actor(settings),
                now=corral.clock.now(),
            )

    if settings.server is not None:
        path = f"/policies/{segment(name)}/rollback"
        with reporting_errors(), settings.remote() as remote:
            answer = remote.post(path, {"version": version})
        applied = AppliedPolicy(answer["name"], answer["version"], answer["changed"])
    else:
        applied = run_async(rollback)
    if json_output:
        typer.echo(dumps({**_applied_json(applied), "restored_from": version}))
    elif applied.changed:
        typer.echo(
            f"rolled policy {name} back to version {version}'s text: version {applied.version} "
            "is active"
        )
    else:
        typer.echo(f"policy {name} unchanged: version {applied.version} already has that text")


# -- test -------------------------------------------------------------------------------------


def _decided_by(decision: Decision) -> str:
    if decision.policy is None:
        return decision.reason
    rule = f", rule {decision.rule}" if decision.rule else ""
    return f"policy {decision.policy} v{decision.version}{rule}: {decision.reason}"


def _load_tests(file: Path) -> tuple[PolicyTests, PolicySet | None]:
    """The test file, and the policies its `policies` names (None: use the tenant's)."""
    tests = load_yaml_model(_read(file), PolicyTests, source=str(file), what="policy test file")
    if tests.policies is None:
        return tests, None
    documents = []
    for relative in tests.policies:
        path = file.parent / relative
        # Version 0: a file, not a stored version.
        documents.append((parse_policy(_read(path), source=str(path)), 0))
    return tests, PolicySet(documents)


@policy_app.command(
    "test",
    epilog="Examples:\n\n  corral policy test examples/policies/support_tests.yaml\n\n"
    "  corral --tenant acme policy test tests.yaml --json\n\n"
    "The file:\n\n"
    "  policies: [support.yaml]     # relative to this file; absent: the tenant's active ones\n\n"
    "  cases:\n\n"
    "    - name: large refund needs finance\n\n"
    "      call: {agent: refunds, tool: issue_refund, args: {amount_cents: 60000}}\n\n"
    "      expect: {effect: require_approval, rule: large-refunds-need-approval}\n\n"
    "Exit codes: 0 every case passed · 1 a case failed · 2 a bad test or policy file.",
)
def run_tests_command(
    ctx: typer.Context, file: FileArgument, json_output: JsonOption = False
) -> None:
    """Run policy test cases: given this call, expect this effect (and rule, policy)."""
    settings = Settings.of(ctx)
    with reporting_errors():
        tests, from_files = _load_tests(file)
    if settings.server is not None:
        results = _test_remote(settings, file, tests)
    else:
        policy_set = from_files
        if policy_set is None:

            async def load() -> PolicySet:
                async with settings.corral(existing=True) as corral:
                    return await load_policy_set(corral.store, settings.tenant)

            policy_set = run_async(load)
        checked = run_cases(policy_set, tests.cases, tenant=settings.tenant, now=time.time())
        results = [(r.case, r.decision, r.problems) for r in checked]
    failed = sum(1 for _, _, wrong in results if wrong)
    if json_output:
        typer.echo(
            dumps(
                {
                    "passed": len(results) - failed,
                    "failed": failed,
                    "cases": [
                        {
                            "name": case.name,
                            "passed": not wrong,
                            "expected": case.expect.model_dump(mode="json"),
                            "decision": decision.model_dump(mode="json"),
                            "problems": wrong,
                        }
                        for case, decision, wrong in results
                    ],
                }
            )
        )
    else:
        for case, decision, wrong in results:
            if wrong:
                typer.echo(f"FAIL  {case.name}: got {'; '.join(wrong)}")
                typer.echo(f"      decided by {_decided_by(decision)}")
            else:
                typer.echo(f"pass  {case.name}: {decision.effect}")
        typer.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        # 1 is "the check did not pass", as for a run that did not succeed under --wait.
        raise typer.Exit(ExitCode.RUN_DID_NOT_SUCCEED)


def _test_remote(
    settings: Settings, file: Path, tests: PolicyTests
) -> list[tuple[Case, Decision, list[str]]]:
    """The cases run by the server: against the test file's policy files (sent as text), or
    the key's tenant's active policies."""
    body: dict[str, Any] = {"cases": [case.model_dump(mode="json") for case in tests.cases]}
    if tests.policies is not None:
        body["policies"] = [_read(file.parent / relative) for relative in tests.policies]
    with reporting_errors(), settings.remote() as remote:
        answers = remote.post("/policies/test", body)["cases"]
    return [
        (case, Decision.model_validate(answer["decision"]), answer["problems"])
        for case, answer in zip(tests.cases, answers, strict=True)
    ]


def _summary_of(answer: dict[str, Any]) -> PolicySummary:
    """A policy of the API (remote mode) as `list_policies` returns it."""
    return PolicySummary(
        name=answer["name"],
        version=answer["version"],
        versions=answer["versions"],
        digest=answer["digest"],
        created_at=timestamp(answer["created_at"]) or 0.0,
        created_by=answer["created_by"],
        restored_from=answer.get("restored_from"),
        description=answer["description"],
    )


def _stored_of(answer: dict[str, Any]) -> StoredPolicy:
    """A policy version of the API (remote mode) as `get_policy` returns it."""
    return StoredPolicy(
        name=answer["name"],
        version=answer["version"],
        document=answer["document"],
        digest=answer["digest"],
        created_at=timestamp(answer["created_at"]) or 0.0,
        created_by=answer["created_by"],
        restored_from=answer.get("restored_from"),
        latest_version=answer["latest_version"],
    )


def register(app: typer.Typer) -> None:
    """Add `corral policy …` to `app`."""
    app.add_typer(policy_app, name="policy")
