"""The fleet tour (`corral demo`, `make demo`): six tickets, real worker processes, one `kill -9`,
one approval gate.

It first sets governance up with the real CLI, as an operator would: two principals (`ada`, the
tenant's admin; `finn`, an approver in the `finance` group) and the fleet's policy
(`support_policy.yaml`). Then it starts every ticket as a run of `handle_ticket`, starts two
`corral worker` processes, and follows the runs in the database (the workers are other
processes: the journal is what this one can see).

When the first refund reaches the ledger, the worker that sent it is killed with SIGKILL while
the provider is still confirming: the refund is applied, its step's result is not journaled. A
replacement worker starts; once the dead worker's leases expire, the runs it held are resumed by
replay, and the ledger shows that refund requested twice with the same idempotency key, applied
once.

The large refund (T-1003, $1,249) stops at the policy's approval gate: its run waits in the
database, holding no process. Once every other ticket is done, the tour shows the request with
`corral approvals list` and `corral approvals show`, stops every worker, starts a fresh one, and
approves as finn with `corral approvals approve`: the run resumes on the new worker and makes the
approved call, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from corral import Corral
from corral.demo.fleet import POLICY_FILE, SCRIPTED, TicketOutcome, handle_ticket
from corral.demo.support_data import TICKETS, money
from corral.demo.support_tools import LEDGER_ENV, LedgerEntry, ledger_entries
from corral.governance.approvals import ApprovalRequest, list_approvals
from corral.store import DEFAULT_DATABASE_URL, RunRecord, open_store
from corral.store.sqlite import parse_sqlite_url

LEASE_TTL = 2.0
"""Short, so the killed worker's runs are taken over within seconds."""
POLL_SECONDS = 0.1
DEADLINE_SECONDS = 90.0
DEMO_APP = "corral.demo.workflows"
ADMIN = "ada"
APPROVER = "finn"
APPROVER_GROUP = "finance"
APPROVAL_REASON = "receipt checked"
FINISHED = ("succeeded", "failed", "cancelled")
CHILD_ENV_DROPPED = ("CORRAL_CRASH_AT", "CORRAL_APP", "CORRAL_TENANT", "CORRAL_PRINCIPAL")
"""Not passed to the processes the tour starts: they work on the tour's database, in the default
tenant (where the tour starts its runs), acting as the principal each command names."""


class TourStepFailed(Exception):
    """A command the tour ran failed (its output was printed)."""


class CliCommand:
    """A `corral` command the tour runs: its arguments after `--database-url`."""

    def __init__(self, *arguments: str, show: str = "") -> None:
        self.arguments = arguments
        self.typed = show or " ".join(_shell(a) for a in arguments)
        """How it is printed (`show` replaces arguments too long to read, a file's full path)."""


@dataclass
class WorkerProcess:
    """A `corral worker` subprocess the tour started."""

    number: int
    process: subprocess.Popen[bytes]
    note: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Progress:
    """What the tour knows about one ticket's run, from the database."""

    run_id: str
    status: str = "pending"
    doing: str = "waiting for a worker"
    run_ids: set[str] = field(default_factory=set)
    gate: ApprovalRequest | None = None
    """The pending approval its run tree waits for, if any."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def _die_with_parent() -> None:
    """In a worker child: receive SIGTERM when the demo process dies, however it dies (killed,
    or its output closed: `make demo | head`), so no worker outlives the demo. Linux only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def ledger_file(database_url: str) -> Path:
    """The refund ledger beside a SQLite database (so a test's tmp database keeps its own)."""
    if database_url.startswith("sqlite:"):
        path, _ = parse_sqlite_url(database_url)
        return path.parent / "demo-refunds.db"
    return Path(".corral/demo-refunds.db")


def _url_flag(database_url: str) -> str:
    return "" if database_url == DEFAULT_DATABASE_URL else f" --database-url '{database_url}'"


def _shell(argument: str) -> str:
    """An argument as you would type it (double quotes read more naturally than shlex's)."""
    if re.fullmatch(r"[\w@%+=:,./-]+", argument):
        return argument
    if not re.search(r'["$`\\!]', argument):
        return f'"{argument}"'
    return shlex.quote(argument)


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it (a checkout), else whole."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class FleetTour:
    """One run of the tour on `database_url`."""

    def __init__(self, database_url: str, *, console: Console, kill: bool = True) -> None:
        self.database_url = database_url
        self.console = console
        self.kill = kill
        self.ledger = ledger_file(database_url)
        self.workers: list[WorkerProcess] = []
        self.progress: dict[str, Progress] = {}
        self.events: list[str] = []
        self.killed: WorkerProcess | None = None
        self.restarted: WorkerProcess | None = None
        self.decided: dict[str, ApprovalRequest] = {}
        """Ticket id → the approval decided for it (read from the store at the end)."""

    # -- processes ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROPPED}
        env[LEDGER_ENV] = str(self.ledger.resolve())
        return env

    def corral_commands(self, *commands: CliCommand) -> None:
        """Run `corral …` commands on the tour's database as real processes, at the same time
        (they do not depend on each other); print each command and its output in order, as if
        typed in a terminal. `TourStepFailed` if one failed."""
        env = self._env()
        env["COLUMNS"] = str(max(self.console.width - 2, 60))  # their tables fit under ours
        started = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "corral.cli",
                    "--database-url",
                    self.database_url,
                    *command.arguments,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for command in commands
        ]
        failed = ""
        for command, process in zip(commands, started, strict=True):
            try:
                output, _ = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
            self.console.print(
                f"[bold]$[/] [cyan]corral{escape(_url_flag(self.database_url))} "
                f"{escape(command.typed)}[/]",
                highlight=False,
            )
            lines = [line.rstrip() for line in output.splitlines()]
            indented = "\n".join(f"  {line}" if line else "" for line in lines).strip("\n")
            if indented:
                self.console.print(Text(indented), highlight=False, soft_wrap=True)
            if process.returncode != 0:
                self.console.print(f"[red]the command failed (exit {process.returncode})[/]")
                failed = failed or command.typed
        if failed:
            raise TourStepFailed(failed)

    def govern(self) -> None:
        """Who may decide, and the policy the fleet runs under: the commands an operator runs."""
        self.console.print(
            f"Governance first: {ADMIN} administers the tenant, {APPROVER} approves for "
            f"{APPROVER_GROUP}, and the fleet's policy sends refunds over $500 to "
            f"{APPROVER_GROUP}:"
        )
        # The tenant's first principal may be added by anyone; after that only an admin may, so
        # acting as ada makes a second run of the demo on the same database work too.
        self.corral_commands(
            CliCommand("--as", ADMIN, "principals", "add", ADMIN, "--role", "admin")
        )
        self.corral_commands(
            CliCommand(
                "--as",
                ADMIN,
                "principals",
                "add",
                APPROVER,
                "--role",
                "approver",
                "--group",
                APPROVER_GROUP,
            ),
            CliCommand(
                "--as",
                ADMIN,
                "policy",
                "apply",
                str(POLICY_FILE),
                show=f"--as {ADMIN} policy apply {_shell(_shown_path(POLICY_FILE))}",
            ),
        )
        self.console.print()

    def start_worker(self, note: str = "") -> WorkerProcess:
        env = self._env()
        command = [
            sys.executable,
            "-m",
            "corral.cli",
            "--database-url",
            self.database_url,
            "--app",
            DEMO_APP,
            "worker",
            "--lease-ttl",
            str(LEASE_TTL),
            "--poll-interval",
            str(POLL_SECONDS),
            "--grace",
            "5",
        ]
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        worker = WorkerProcess(len(self.workers) + 1, process, note)
        self.workers.append(worker)
        self.events.append(f"worker {worker.number} started (pid {worker.pid}){note}")
        return worker

    def stop_workers(self, note: str = "") -> None:
        """Stop every worker still running (SIGTERM, then SIGKILL if one hangs)."""
        running = [w for w in self.workers if w.process.poll() is None]
        for worker in running:
            worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.communicate()
        for worker in running:
            worker.note = note or worker.note

    def maybe_kill(self, entries: list[LedgerEntry]) -> None:
        """Kill the worker that sent the first refund, while the provider is confirming it."""
        if not self.kill or self.killed is not None or not entries:
            return
        pid = entries[0].pids[0]
        victim = next((w for w in self.workers if w.pid == pid), None)
        if victim is None or victim.process.poll() is not None:
            return
        os.kill(victim.pid, signal.SIGKILL)
        victim.process.wait()
        victim.note = " — killed"
        self.killed = victim
        self.events.append(
            f"[red]worker {victim.number} (pid {victim.pid}) killed with SIGKILL[/] right after "
            f"refund {entries[0].refund_id} reached the ledger, before its step's result was "
            "journaled"
        )
        self.start_worker(" as a replacement")
        self.events.append(
            f"its runs resume by replay on another worker once their leases expire "
            f"({LEASE_TTL:g} s)"
        )

    # -- following the runs --------------------------------------------------------------------

    async def poll(self, corral: Corral) -> None:
        runs = await corral.list_runs(limit=500)
        pending = await corral.store.read_script(
            lambda dialect: list_approvals(corral.tenant, "pending", 500)
        )
        by_parent: dict[str, list[RunRecord]] = {}
        by_id = {run.run_id: run for run in runs}
        for run in runs:
            if run.parent_run_id is not None:
                by_parent.setdefault(run.parent_run_id, []).append(run)
        for progress in self.progress.values():
            root = by_id.get(progress.run_id)
            if root is None:
                continue
            tree = [root]
            for run in tree:
                tree.extend(by_parent.get(run.run_id, []))
            progress.run_ids = {run.run_id for run in tree}
            progress.status = root.status
            progress.gate = None
            if root.finished:
                progress.doing = _finished_label(root)
                continue
            gate = next((a for a in pending if a.run_id in progress.run_ids), None)
            if gate is not None:
                # The run waits in the database for a person: no worker holds it.
                progress.gate = gate
                progress.doing = _gate_label(gate)
                continue
            active = [run for run in tree if not run.finished]
            latest: tuple[float, str] | None = None
            for run in active:
                journal = await corral.journal(run.run_id)
                if journal:
                    step = journal[-1]
                    where = run.workflow.removeprefix("agent:")
                    label = f"{where} · {step.name}" + (" …" if step.status == "started" else "")
                    if latest is None or step.started_at >= latest[0]:
                        latest = (step.started_at, label)
            progress.doing = latest[1] if latest else "waiting for a worker"

    def render(self) -> Group:
        table = Table(title=f"Support fleet ({SCRIPTED})", expand=False)
        table.add_column("ticket")
        table.add_column("subject")
        table.add_column("status")
        table.add_column("now")
        for ticket in TICKETS:
            progress = self.progress.get(ticket.ticket_id)
            if progress is None:
                continue
            style = {"succeeded": "green", "failed": "red"}.get(progress.status, "yellow")
            status = progress.status
            if progress.gate is not None:
                status, style = "waiting for approval", "bold magenta"
            table.add_row(
                ticket.ticket_id,
                ticket.subject,
                Text(status, style=style),
                progress.doing,
            )
        workers = "  ".join(f"worker {w.number} pid {w.pid}{w.note}" for w in self.workers)
        return Group(table, Text(workers, style="dim"))

    # -- the tour ------------------------------------------------------------------------------

    async def run(self) -> int:
        started = time.monotonic()
        try:
            self.govern()
        except TourStepFailed:
            self.console.print(
                f"[red]Governance could not be set up, so the fleet did not start.[/] The demo "
                f"acts as {ADMIN}, the tenant's admin; on a database whose tenant already has "
                "other principals, run it on a fresh one: corral --database-url "
                "sqlite:///tmp/corral-demo.db demo",
                highlight=False,
            )
            return 1
        store = open_store(self.database_url)
        async with Corral(store=store, workflows=[handle_ticket]) as corral:
            try:
                await self.execute(corral, started)
            except TourStepFailed:
                self.stop_workers()
                return 1
            self.stop_workers()
            outcomes = {
                ticket_id: await corral.get_run(progress.run_id)
                for ticket_id, progress in self.progress.items()
            }
            decided = await corral.store.read_script(
                lambda dialect: list_approvals(corral.tenant, None, 500)
            )
            for ticket_id, progress in self.progress.items():
                mine = [a for a in decided if a.run_id in progress.run_ids and not a.pending]
                if mine:
                    self.decided[ticket_id] = mine[0]
        elapsed = time.monotonic() - started
        return self.report(outcomes, elapsed)

    async def execute(self, corral: Corral, started: float) -> None:
        """Run the tickets until only approval gates are left; let a person decide them after
        restarting every worker; then run the tickets to the end."""
        for ticket in TICKETS:
            handle = await corral.start(handle_ticket, ticket)
            self.progress[ticket.ticket_id] = Progress(handle.run_id)
        self.console.print(
            f"Started {len(TICKETS)} tickets as runs of [bold]handle_ticket[/]; two "
            "`corral worker` processes execute them."
        )
        self.start_worker()
        self.start_worker()
        # Until every ticket is done or waits for a person.
        await self.follow(corral, started, lambda p: p.finished or p.gate is not None)
        gates = [p.gate for p in self.progress.values() if p.gate is not None]
        if gates:
            self.approve(gates)
            await self.follow(corral, started, lambda p: p.finished)

    async def follow(
        self, corral: Corral, started: float, settled: Callable[[Progress], bool]
    ) -> None:
        """Poll the runs with a live table until `settled(progress)` holds for every ticket."""
        shown = len(self.events)
        with Live(self.render(), console=self.console, refresh_per_second=8) as live:
            while time.monotonic() - started < DEADLINE_SECONDS:
                await self.poll(corral)
                mine = [e for e in ledger_entries(self.ledger) if self._ours(e)]
                self.maybe_kill(mine)
                for event in self.events[shown:]:
                    live.console.print(event)
                shown = len(self.events)
                live.update(self.render())
                if all(settled(p) for p in self.progress.values()):
                    break
                await asyncio.sleep(POLL_SECONDS)

    def approve(self, gates: list[ApprovalRequest]) -> None:
        """What a person does at the gate, with the CLI, while no worker is running."""
        console = self.console
        console.print()
        waiting = "; ".join(
            f"{ticket_id} {_gate_label(p.gate)}"
            for ticket_id, p in self.progress.items()
            if p.gate is not None
        )
        console.print(
            f"[bold]Approval gate.[/] Every other ticket is done. {waiting}: its run waits in "
            "the database, holding no process, until a person decides. What finance sees:"
        )
        self.corral_commands(
            CliCommand("approvals", "list"),
            *(CliCommand("approvals", "show", gate.approval_id) for gate in gates),
        )
        console.print()
        running = [w for w in self.workers if w.process.poll() is None]
        console.print(
            "[bold]Stopping all worker processes[/] ("
            + ", ".join(f"worker {w.number} pid {w.pid}" for w in running)
            + ") with SIGTERM…"
        )
        self.stop_workers(" — stopped")
        console.print(
            "All stopped: no process is running the fleet; the waiting run is only rows in the "
            "database."
        )
        self.restarted = self.start_worker(" — started after the stop")
        console.print(
            f"Started a fresh worker: worker {self.restarted.number} "
            f"(pid {self.restarted.pid}). Now {APPROVER} approves:"
        )
        self.corral_commands(
            *(
                CliCommand(
                    "--as",
                    APPROVER,
                    "approvals",
                    "approve",
                    gate.approval_id,
                    "--reason",
                    APPROVAL_REASON,
                )
                for gate in gates
            )
        )
        console.print(f"The run resumes on worker {self.restarted.number} and makes the call:")

    def _ours(self, entry: LedgerEntry) -> bool:
        run_id = entry.idempotency_key.rsplit(":", 1)[0]
        return any(run_id in p.run_ids for p in self.progress.values())

    # -- the report ----------------------------------------------------------------------------

    def report(self, runs: dict[str, RunRecord], elapsed: float) -> int:
        console = self.console
        console.print()
        console.print(f"[bold]What happened to each ticket[/] ({SCRIPTED}):")
        failed = 0
        for ticket in TICKETS:
            run = runs[ticket.ticket_id]
            if run.status != "succeeded" or run.result is None:
                failed += 1
                console.print(f"{ticket.ticket_id}  [red]{run.status}[/]: {run.error or ''}")
                continue
            outcome = TicketOutcome.model_validate(json.loads(run.result))
            refund = (
                f"refund {outcome.refund.refund_id} {money(outcome.refund.amount_cents)}"
                if outcome.refund is not None
                else "no refund"
            )
            console.print(
                f"[bold]{ticket.ticket_id}[/] {ticket.subject} — route [cyan]{outcome.route}[/]; "
                f"specialists: {', '.join(outcome.specialists)}; {refund}; run {run.run_id}"
            )
            if outcome.approval:
                console.print(f"  [magenta]approval gate:[/] {outcome.approval}")
            decided = self.decided.get(ticket.ticket_id)
            if decided is not None:
                console.print(
                    f"  [magenta]{decided.status}[/] by {decided.decided_by} "
                    f'("{escape(decided.decision_reason or "")}") — approval '
                    f"{decided.approval_id}, policy {decided.policy} v{decided.policy_version}, "
                    f"rule {decided.rule}",
                    highlight=False,
                )
            console.print(
                Panel(
                    outcome.reply.body,
                    title=outcome.reply.subject,
                    title_align="left",
                    expand=False,
                    border_style="dim",
                )
            )
        entries = [e for e in ledger_entries(self.ledger) if self._ours(e)]
        refunded = sum(
            1
            for run in runs.values()
            if run.result is not None and json.loads(run.result).get("refund") is not None
        )
        console.print(
            f"[bold]Refund ledger[/] ({self.ledger}): {len(entries)} refund(s) applied for "
            f"{refunded} refunded ticket(s):"
        )
        approved_calls = {
            (a.arguments.get("order_id"), a.run_id)
            for a in self.decided.values()
            if a.status == "approved"
        }
        for entry in entries:
            repeated = (
                " — [yellow]requested twice[/] (in flight when its worker was killed; sent "
                "again with the same idempotency key), [green]applied once[/]"
                if entry.requests > 1
                else ""
            )
            if (entry.order_id, entry.idempotency_key.rsplit(":", 1)[0]) in approved_calls:
                by = next((w for w in self.workers if w.pid in entry.pids), None)
                repeated += (
                    " — [magenta]the approved call[/], made once"
                    + (f" by worker {by.number}, started after the stop" if by else "")
                    if entry.requests == 1
                    else f" — [red]the approved call was requested {entry.requests} times[/]"
                )
            console.print(
                f"  {entry.refund_id} order {entry.order_id} {money(entry.amount_cents)} key "
                f"{entry.idempotency_key}: {entry.requests} request(s){repeated}"
            )
        if self.killed is not None:
            console.print(
                f"Worker {self.killed.number} was killed mid-fleet; the runs it held were resumed "
                "by replay: every step already in the journal returned its recorded result "
                "without running again."
            )
        if self.restarted is not None:
            console.print(
                "The large refund waited for a person while every worker was stopped; approved "
                f"from the CLI, it resumed on worker {self.restarted.number} and ran the exact "
                "call that was approved."
            )
        console.print(
            f"{len(TICKETS) - failed} of {len(TICKETS)} tickets handled in {elapsed:.1f} s."
        )
        example = next((p.run_id for p in self.progress.values()), "RUN_ID")
        refunded_run = next(
            (
                self.progress[t].run_id
                for t, run in runs.items()
                if run.result is not None and json.loads(run.result).get("refund") is not None
            ),
            example,
        )
        flag = _url_flag(self.database_url)
        console.print()
        console.print("[bold]Inspect the runs:[/]")
        approval_lines = [
            f"corral{flag} approvals show {a.approval_id}" for a in self.decided.values()
        ]
        for line in (
            f"corral{flag} runs list",
            f"corral{flag} runs show {refunded_run}",
            f"corral{flag} runs list --workflow agent:refunds",
            *approval_lines,
            f"corral{flag} approvals list --status all",
            f"corral{flag} audit verify",
            f"corral{flag} run handle_ticket --input '{_ticket_json()}' --wait",
        ):
            console.print(f"  [cyan]{line}[/]", markup=True, highlight=False)
        return 1 if failed else 0


def _gate_label(gate: ApprovalRequest) -> str:
    amount = gate.arguments.get("amount_cents")
    what = f" {money(amount)}" if isinstance(amount, int) else ""
    return (
        f"waits for approval {gate.approval_id} by {', '.join(gate.approvers)}: {gate.tool}{what}"
    )


def _finished_label(run: RunRecord) -> str:
    if run.status != "succeeded" or run.result is None:
        return run.status
    outcome = json.loads(run.result)
    refund = outcome.get("refund")
    done = f"done: {outcome.get('route')}"
    return done + (f", refunded {money(refund['amount_cents'])}" if refund else "")


def _ticket_json() -> str:
    return json.dumps(
        {
            "ticket_id": "T-2001",
            "customer": "you@example.com",
            "subject": "Broken mug",
            "text": "The mug in order A-1002 arrived broken.",
        }
    )


def main(database_url: str = DEFAULT_DATABASE_URL, *, console: Console | None = None) -> int:
    """Run the fleet tour; 0 when every ticket was handled."""
    out = console or Console(highlight=False)
    out.print(
        Panel.fit(
            "Corral demo: a customer-support fleet of agents, durable on "
            f"{'the embedded SQLite store' if database_url.startswith('sqlite:') else 'PostgreSQL'}"
            f" ({database_url}).\n"
            f"Every agent runs on the {SCRIPTED}.\n"
            "Midway, a worker is killed with SIGKILL; another resumes its runs by replay.\n"
            "The large refund stops at an approval gate; every worker is stopped and restarted\n"
            f"before {APPROVER} (finance) approves it with the CLI.",
            title="corral demo",
        )
    )
    return asyncio.run(FleetTour(database_url, console=out).run())


__all__ = ["FleetTour", "main"]
