"""The fleet tour (`corral demo`, `make demo`): six tickets, real worker processes, one `kill -9`.

It starts every ticket as a run of `handle_ticket`, starts two `corral worker` processes, and
follows the runs in the database (the workers are other processes: the journal is what this one
can see). When the first refund reaches the ledger, the worker that sent it is killed with
SIGKILL while the provider is still confirming: the refund is applied, its step's result is not
journaled. A replacement worker starts; once the dead worker's leases expire, the runs it held
are resumed by replay. The ledger then shows every refund once, the interrupted one requested
twice with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from corral import Corral
from corral.demo.fleet import SCRIPTED, TicketOutcome, handle_ticket
from corral.demo.support_data import TICKETS, money
from corral.demo.support_tools import LEDGER_ENV, LedgerEntry, ledger_entries
from corral.store import DEFAULT_DATABASE_URL, RunRecord, open_store
from corral.store.sqlite import parse_sqlite_url

LEASE_TTL = 2.0
"""Short, so the killed worker's runs are taken over within seconds."""
POLL_SECONDS = 0.1
DEADLINE_SECONDS = 90.0
DEMO_APP = "corral.demo.workflows"


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


def ledger_file(database_url: str) -> Path:
    """The refund ledger beside a SQLite database (so a test's tmp database keeps its own)."""
    if database_url.startswith("sqlite:"):
        path, _ = parse_sqlite_url(database_url)
        return path.parent / "demo-refunds.db"
    return Path(".corral/demo-refunds.db")


def _url_flag(database_url: str) -> str:
    return "" if database_url == DEFAULT_DATABASE_URL else f" --database-url '{database_url}'"


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

    # -- processes ---------------------------------------------------------------------------

    def start_worker(self, note: str = "") -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("CORRAL_CRASH_AT", "CORRAL_APP")}
        env[LEDGER_ENV] = str(self.ledger.resolve())
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
        )
        worker = WorkerProcess(len(self.workers) + 1, process, note)
        self.workers.append(worker)
        self.events.append(f"worker {worker.number} started (pid {worker.pid}){note}")
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.communicate()

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
            if root.finished:
                progress.doing = _finished_label(root)
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
            table.add_row(
                ticket.ticket_id,
                ticket.subject,
                Text(progress.status, style=style),
                progress.doing,
            )
        workers = "  ".join(f"worker {w.number} pid {w.pid}{w.note}" for w in self.workers)
        return Group(table, Text(workers, style="dim"))

    # -- the tour ------------------------------------------------------------------------------

    async def run(self) -> int:
        started = time.monotonic()
        store = open_store(self.database_url)
        async with Corral(store=store, workflows=[handle_ticket]) as corral:
            for ticket in TICKETS:
                handle = await corral.start(handle_ticket, ticket)
                self.progress[ticket.ticket_id] = Progress(handle.run_id)
            self.console.print(
                f"Started {len(TICKETS)} tickets as runs of [bold]handle_ticket[/]; two "
                "`corral worker` processes execute them."
            )
            self.start_worker()
            self.start_worker()
            shown = 0
            with Live(self.render(), console=self.console, refresh_per_second=8) as live:
                while time.monotonic() - started < DEADLINE_SECONDS:
                    await self.poll(corral)
                    mine = [e for e in ledger_entries(self.ledger) if self._ours(e)]
                    self.maybe_kill(mine)
                    for event in self.events[shown:]:
                        live.console.print(event)
                    shown = len(self.events)
                    live.update(self.render())
                    if all(
                        p.status in ("succeeded", "failed", "cancelled")
                        for p in self.progress.values()
                    ):
                        break
                    await asyncio.sleep(POLL_SECONDS)
            self.stop_workers()
            outcomes = {
                ticket_id: await corral.get_run(progress.run_id)
                for ticket_id, progress in self.progress.items()
            }
        elapsed = time.monotonic() - started
        return self.report(outcomes, elapsed)

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
                console.print(
                    f"  [yellow]approval gate (pending governance):[/] {outcome.approval}"
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
        for entry in entries:
            repeated = (
                " — [yellow]requested twice[/] (in flight when its worker was killed; sent "
                "again with the same idempotency key), [green]applied once[/]"
                if entry.requests > 1
                else ""
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
        for line in (
            f"corral{flag} runs list",
            f"corral{flag} runs show {refunded_run}",
            f"corral{flag} runs list --workflow agent:refunds",
            f"corral{flag} run handle_ticket --input '{_ticket_json()}' --wait",
        ):
            console.print(f"  [cyan]{line}[/]", markup=True, highlight=False)
        return 1 if failed else 0


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
            "Midway, a worker is killed with SIGKILL; another resumes its runs by replay.",
            title="corral demo",
        )
    )
    return asyncio.run(FleetTour(database_url, console=out).run())


__all__ = ["FleetTour", "main"]
