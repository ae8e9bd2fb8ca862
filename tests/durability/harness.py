"""Real worker processes for the durability suites: start, kill -9, wait with deadlines.

Every process a `Fleet` starts is killed at its `close()` if still alive, and every wait here has
a deadline: a stuck engine fails its test with the worker's log instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from corral import Corral

from . import databases, effect_ledger
from .databases import Database, SQLiteDatabase
from .durable_shapes import Op, expected_output, signal_payload
from .worker_process import READY

TESTS_DIR = Path(__file__).resolve().parent.parent
POLL = 0.03


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _database(db: Path | Database) -> Database:
    return SQLiteDatabase(db) if isinstance(db, Path) else db


def backdate_leases(db: Path | Database) -> int:
    """Expire every lease now, as if the lease TTL had passed since the worker died."""
    return databases.backdate_leases(_database(db))


def progress(db: Path | Database) -> tuple[int, int, float]:
    """Unsettled runs, journal entries, latest run update: unchanged means nothing moves."""
    return databases.progress(_database(db))


def unsettled_runs(db: Path | Database, limit: int = 10) -> list[tuple[object, ...]]:
    """Runs not settled yet, with who holds them: for a stalled fleet's failure message."""
    return databases.unsettled_runs(_database(db), limit)


async def drain(
    fleet: Fleet,
    database: Database,
    *,
    settled: Callable[[], Awaitable[bool]],
    check_alive: Callable[[], None],
    timeout: float,
    stall: float,
    seed: int,
    detail: Callable[[], str] = lambda: "",
) -> None:
    """Wait until every run has settled. Fail, with the workers' stacks in their logs, if
    nothing moves for `stall` seconds or the whole wait passes `timeout`."""
    deadline = time.monotonic() + timeout
    last, moved = progress(database), time.monotonic()
    while not await settled():
        check_alive()
        now = progress(database)
        if now != last:
            last, moved = now, time.monotonic()
        if time.monotonic() - moved > stall or time.monotonic() > deadline:
            fleet.dump_stacks()
            await asyncio.sleep(1.0)
            raise AssertionError(
                f"seed {seed}: the fleet stopped draining ({last[0]} runs unsettled, nothing "
                f"moved for {time.monotonic() - moved:.0f}s); e.g. {unsettled_runs(database)}; "
                f"worker logs (stacks) in {fleet.folder}{detail()}"
            )
        await asyncio.sleep(0.1)


async def stop_cleanly(fleet: Fleet, workers: Iterable[WorkerProcess]) -> None:
    """SIGTERM each worker; every one must exit 0 (a graceful stop)."""
    for worker in workers:
        code = await fleet.terminate(worker)
        assert code == 0, f"worker {worker.pid} exited with {code}:\n{worker.tail()}"


async def wrong_results(corral: Corral, started: Mapping[str, list[Op]]) -> list[tuple[str, Any]]:
    """Succeeded runs whose result differs from what their shape computes."""
    wrong: list[tuple[str, Any]] = []
    for run_id, ops in started.items():
        run = await corral.get_run(run_id)
        result = json.loads(run.result) if run.result is not None else None
        if run.status == "succeeded" and result != expected_output(ops):
            wrong.append((run_id, result))
    return wrong


async def all_settled(corral: Corral) -> bool:
    """True when no run (children included) is pending, running or waiting."""
    counts = await corral.store.count_runs()
    return counts["pending"] + counts["running"] + counts["waiting"] == 0


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    crash_at: str | None
    started_at: float
    log_file: IO[bytes]
    died_at: float | None = None
    """When the process was seen dead after a SIGKILL (its own crash point or ours)."""
    ready_at: float | None = None
    """When `ready()` first saw the worker serving (its imports alone take a second or two)."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ready(self) -> bool:
        """True once the worker serves (and handles SIGTERM gracefully)."""
        if self.ready_at is not None:
            return True
        self.log_file.flush()
        with self.log.open("rb") as log:
            if READY.encode() not in log.read(4096):
                return False
        self.ready_at = time.time()
        return True

    async def serving_for(self) -> float:
        """Seconds since the worker was first seen serving (0 if it is not serving yet)."""
        if not await self.ready():
            return 0.0
        assert self.ready_at is not None
        return time.time() - self.ready_at

    def dump_stacks(self) -> None:
        """Ask the worker to write its threads' and its tasks' stacks into its log."""
        self.proc.send_signal(signal.SIGUSR2)
        self.proc.send_signal(signal.SIGUSR1)

    def tail(self, lines: int = 40) -> str:
        self.log_file.flush()
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass
class Fleet:
    """Worker subprocesses on one Corral database (SQLite or PostgreSQL) and one effect ledger."""

    folder: Path
    database: Database
    ledger: Path
    concurrency: int = 4
    lease_ttl: float = 30.0
    heartbeat: float | None = None
    poll: float = 0.05
    tool_delay: tuple[float, float] | None = None
    max_seconds: float = 90.0
    processes: list[WorkerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.database.url

    def check(
        self, *, deaths: dict[int, float] | None = None, expect_succeeded: bool = True
    ) -> effect_ledger.Report:
        """The checker over this fleet's ledger and database (`deaths`: the fleet's own)."""
        return effect_ledger.check(
            self.ledger,
            self.database.checker_file(self.folder),
            deaths=self.deaths() if deaths is None else deaths,
            expect_succeeded=expect_succeeded,
        )

    def spawn(self, *, crash_at: str | None = None, until_idle: bool = False) -> WorkerProcess:
        env = dict(os.environ)
        env.pop("CORRAL_CRASH_AT", None)
        if crash_at is not None:
            env["CORRAL_CRASH_AT"] = crash_at
        env["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        args = [
            sys.executable,
            "-m",
            "durability.worker_process",
            self.url,
            "--ledger",
            str(self.ledger),
            "--concurrency",
            str(self.concurrency),
            "--lease-ttl",
            str(self.lease_ttl),
            "--poll",
            str(self.poll),
            "--max-seconds",
            str(self.max_seconds),
        ]
        if self.heartbeat is not None:
            args += ["--heartbeat", str(self.heartbeat)]
        if self.tool_delay is not None:
            args += ["--tool-delay", str(self.tool_delay[0]), str(self.tool_delay[1])]
        if until_idle:
            args.append("--until-idle")
        log = self.folder / f"worker-{len(self.processes)}.log"
        log_file = log.open("wb")
        proc = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self.folder
        )
        worker = WorkerProcess(proc, log, crash_at, time.time(), log_file)
        self.processes.append(worker)
        return worker

    def dump_stacks(self) -> None:
        """Ask every live worker to write its threads' and tasks' stacks into its log."""
        for worker in self.alive():
            worker.dump_stacks()

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.processes if w.proc.poll() is None]

    def kill(self, worker: WorkerProcess) -> None:
        """kill -9, and wait until the process is gone: its executions end now at the latest."""
        os.kill(worker.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)
        worker.died_at = time.time()

    def deaths(self) -> dict[int, float]:
        return {w.pid: w.died_at for w in self.processes if w.died_at is not None}

    async def wait_exit(
        self,
        worker: WorkerProcess,
        *,
        timeout: float,
        until: Callable[[], Awaitable[bool]] | None = None,
        each_poll: Callable[[], Awaitable[object]] | None = None,
    ) -> int:
        """Wait for `worker` to exit; SIGTERM it once `until()` holds and it serves. Fails after
        `timeout`, with the worker's stacks in its log."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        terminated = False
        while True:
            code = worker.proc.poll()
            if code is not None:
                if code == -signal.SIGKILL:
                    worker.died_at = time.time()
                return code
            if loop.time() > deadline:
                worker.dump_stacks()
                await asyncio.sleep(1.0)
                self.kill(worker)
                raise AssertionError(
                    f"worker {worker.pid} (crash_at={worker.crash_at}) still running after "
                    f"{timeout}s; its log:\n{worker.tail()}"
                )
            if each_poll is not None:
                await each_poll()
            # A worker still importing would die of SIGTERM instead of stopping gracefully.
            if not terminated and until is not None and await until() and await worker.ready():
                worker.proc.send_signal(signal.SIGTERM)
                terminated = True
            await asyncio.sleep(POLL)

    async def terminate(self, worker: WorkerProcess, *, timeout: float = 20.0) -> int:
        return await self.wait_exit(worker, timeout=timeout, until=_always)

    def close(self) -> None:
        for worker in self.processes:
            if worker.proc.poll() is None:
                self.kill(worker)
            worker.log_file.close()


async def _always() -> bool:
    return True


class SignalSender:
    """The outside world sending each signal a run waits for, once: a journaled wait with no
    outcome in a waiting run gets `signal_payload(name)`, remembered across worker crashes."""

    def __init__(self, corral: Corral) -> None:
        self.corral = corral
        self.sent: set[tuple[str, int]] = set()

    async def send_due(self) -> int:
        sent = 0
        for run in await self.corral.list_runs(status="waiting", limit=100_000):
            for record in await self.corral.journal(run.run_id):
                key = (run.run_id, record.seq)
                if record.kind == "signal" and record.status == "started" and key not in self.sent:
                    await self.corral.signal(run.run_id, record.name, signal_payload(record.name))
                    self.sent.add(key)
                    sent += 1
        return sent
