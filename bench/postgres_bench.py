"""Engine benchmarks on PostgreSQL: worker processes, lease takeover, paused runs, per-step cost.

Each benchmark gets a schema of its own (`?schema=bench_<random>`), dropped afterwards, so that
the figures do not depend on what an earlier benchmark (or another user of the database) left.
Worker processes are `python -m bench.worker_process`; they import the workflows below by
reference (`bench.postgres_bench:...`), as any worker on another host would.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from bench.engine_bench import Row, concurrent_steps_per_second, durable_per_step, noop
from corral import Corral, RunContext, RunHandle, current_step
from corral.store import tenant_scope
from corral.store.postgresql import parse_postgres_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
URL_ENV = "CORRAL_BENCH_POSTGRES_URL"
REPO_ROOT = Path(__file__).resolve().parents[1]

NOOP_STEPS = "bench.postgres_bench:noop_steps"
HOLD_THEN_STEP = "bench.postgres_bench:hold_then_step"
PARK = "bench.postgres_bench:park"


# -- workflows (imported by reference in the worker processes) ---------------------------------


async def noop_steps(ctx: RunContext, steps: int) -> int:
    for _ in range(steps):
        await ctx.step(noop)
    return steps


async def slow_first_attempt() -> None:
    """Hold the run (for an hour) unless this is a redelivery after its worker died."""
    info = current_step()
    if info is not None and not info.redelivered:
        await asyncio.sleep(3600)


async def hold_then_step(ctx: RunContext, _: None) -> None:
    await ctx.step(slow_first_attempt)
    await ctx.step(noop)


async def park(ctx: RunContext, _: None) -> None:
    await ctx.wait_for_signal("never")


# -- the database ------------------------------------------------------------------------------


def with_params(url: str, **params: str) -> str:
    """`url` with these query parameters set (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


async def unreachable(url: str) -> str | None:
    """Why PostgreSQL at `url` cannot be used, or None when it can."""
    conninfo, _ = parse_postgres_url(url)
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=3)
    except (psycopg.Error, OSError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    await conn.close()
    return None


@asynccontextmanager
async def fresh_schema(base_url: str) -> AsyncIterator[str]:
    """A URL naming a new, empty schema; the schema and everything in it is dropped on exit.

    The URL also sets libpq's `application_name` to the schema's name, so that `WaitSampler`
    can tell this benchmark's connections from others on the same server.
    """
    schema = f"bench_{secrets.token_hex(4)}"
    url = with_params(base_url, schema=schema, application_name=schema)
    try:
        yield url
    finally:
        conninfo, _ = parse_postgres_url(url)
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


async def query_one(url: str, statement: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
    """One row of a query run in `url`'s schema, outside the store."""
    conninfo, schema = parse_postgres_url(url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None
    return tuple(row)


class WaitSampler:
    """What the benchmark's PostgreSQL backends are doing, sampled every 20 ms.

    Each sample counts the backends that are not idle between transactions: running
    (`CPU`), waiting inside the server (`IO:WALSync`, `LWLock:WALWrite`, `Lock:transactionid`…),
    or idle inside a transaction, waiting for the worker's next statement (`client round trip`).
    """

    def __init__(self, url: str) -> None:
        self.conninfo, self.app = parse_postgres_url(url)
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WaitSampler:
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        self._task = asyncio.create_task(self._sample(conn))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _sample(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            while True:
                cur = await conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE application_name = %s AND pid <> pg_backend_pid()"
                    " AND state IS NOT NULL AND state <> 'idle'",
                    (self.app,),
                )
                for state, kind, event in await cur.fetchall():
                    if state == "active":
                        self.counts["CPU" if kind is None else f"{kind}:{event}"] += 1
                    else:
                        self.counts["client round trip"] += 1
                self.samples += 1
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    def row(self, name: str) -> Row:
        total = sum(self.counts.values())
        top = ", ".join(
            f"{what} {count / max(total, 1):.0%}" for what, count in self.counts.most_common(4)
        )
        return Row(name, total / max(self.samples, 1), "backends", f"busy on average: {top}")


# -- worker processes --------------------------------------------------------------------------


class WorkerProcess:
    """A `python -m bench.worker_process` child; always `kill()` it in a finally."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, *options: str) -> WorkerProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.worker_process",
            url,
            *options,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
            env=env,
        )
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if line.strip() != b"ready":
            raise RuntimeError(f"worker {self.pid} did not start: {line!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for an `--until-idle` worker to return; its statistics."""
        assert self.proc.stdout is not None
        out = await asyncio.wait_for(self.proc.stdout.read(), timeout)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if code != 0:
            raise RuntimeError(f"worker {self.pid} exited with {code}")
        stats: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return stats

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.returncode is None:
            with suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            await asyncio.wait_for(self.proc.wait(), 10)


async def start_workers(url: str, count: int, *options: str) -> list[WorkerProcess]:
    workers: list[WorkerProcess] = []
    try:
        for _ in range(count):
            workers.append(await WorkerProcess.start(url, *options))
        await asyncio.gather(*(w.wait_ready() for w in workers))
    except BaseException:
        await asyncio.gather(*(w.kill() for w in workers), return_exceptions=True)
        raise
    return workers


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat (Linux).

    Busy is everything but idle and iowait, so it counts the server, the workers and the
    benchmark alike: the measure of whether the machine, not one process, is saturated.
    """
    try:
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / ticks, total / ticks


async def drain(url: str, workers: int, *, concurrency: int, timeout: float) -> dict[str, Any]:
    """Start `workers` processes, let them execute every runnable run; wall-clock start and stats.

    The clock starts once every process has opened the store and is told to go.
    """
    procs = await start_workers(
        url, workers, "--concurrency", str(concurrency), "--until-idle", "--wait-for-go"
    )
    try:
        started = time.time()
        busy_before, _ = machine_cpu_seconds()
        for proc in procs:
            proc.go()
        stats = await asyncio.gather(*(p.finish(timeout) for p in procs))
        ended = time.time()
        busy_after, _ = machine_cpu_seconds()
    finally:
        await asyncio.gather(*(p.kill() for p in procs), return_exceptions=True)
    return {
        "started": started,
        "ended": ended,
        "batches": sum(s["batches"] for s in stats),
        "operations": sum(s["operations"] for s in stats),
        "claimed": [s["claimed"] for s in stats],
        "cpu": sum(s["cpu"] for s in stats),
        "machine_busy": busy_after - busy_before,
    }


async def create_runs(corral: Corral, workflow: str, input: Any, count: int) -> None:
    """Start `count` runs, a thousand at a time so their inserts are group-committed."""
    batch = 1000
    for offset in range(0, count, batch):
        await asyncio.gather(
            *(corral.start(workflow, input) for _ in range(min(batch, count - offset)))
        )


# -- the benchmarks ----------------------------------------------------------------------------


async def raw_postgres_per_step(url: str, steps: int) -> float:
    """Microseconds per journal row with raw psycopg: one insert, one commit each (the floor)."""
    conninfo, schema = parse_postgres_url(url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        await conn.execute(
            "CREATE TABLE raw_steps (run_id TEXT, seq INTEGER, kind TEXT, name TEXT,"
            " status TEXT, result TEXT, started_at DOUBLE PRECISION,"
            " finished_at DOUBLE PRECISION, PRIMARY KEY (run_id, seq))"
        )
        started = time.perf_counter()
        for seq in range(steps):
            now = time.time()
            await conn.execute(
                "INSERT INTO raw_steps VALUES"
                " (%s, %s, 'step', 'noop', 'succeeded', 'null', %s, %s)",
                ("run", seq, now, now),
            )
        elapsed = time.perf_counter() - started
    return elapsed / steps * 1e6


async def throughput(base_url: str, *, workers: int, runs: int, steps: int) -> list[Row]:
    """Runs of `steps` no-op steps drained by `workers` worker processes of 32 slots each."""
    async with fresh_schema(base_url) as url:
        async with Corral(url) as corral:
            await create_runs(corral, NOOP_STEPS, steps, runs)
        async with WaitSampler(url) as waits:
            timing = await drain(url, workers, concurrency=32, timeout=300)
        done, last = await query_one(
            url, "SELECT count(*), max(updated_at) FROM runs WHERE status = 'succeeded'"
        )
        async with Corral(url) as corral:
            counts = await corral.store.count_runs()
    if done != runs:
        raise AssertionError(f"{done} of {runs} runs succeeded: {counts}")
    # The last outcome's commit time, not the processes' exit: closing a store is not work.
    elapsed = float(last) - timing["started"]
    per_commit = timing["operations"] / max(timing["batches"], 1)
    claimed = "/".join(str(c) for c in timing["claimed"])
    processes = f"{workers} worker process{'es' if workers > 1 else ''}"
    return [
        Row(
            f"pg: {processes}, {steps}-step runs",
            runs / elapsed,
            "runs/s",
            f"{runs * steps / elapsed:,.0f} steps/s; {per_commit:.1f} writes/commit;"
            f" workers' CPU {timing['cpu'] / elapsed:.2f} cores, whole machine"
            f" {timing['machine_busy'] / (timing['ended'] - timing['started']):.2f}"
            f" of {os.cpu_count()} cores busy; runs claimed {claimed}",
        ),
        waits.row(f"pg:   server backends, {processes}"),
    ]


LEASE_TTL = 2.0
HEARTBEAT = 0.5
RESCUE_OPTIONS = (
    "--concurrency",
    "4",
    "--lease-ttl",
    str(LEASE_TTL),
    "--heartbeat",
    str(HEARTBEAT),
    "--poll-interval",
    "0.1",
)


async def _wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll `condition()` every 10 ms until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.01)


async def lease_takeover(base_url: str, *, samples: int) -> tuple[list[float], list[float]]:
    """Seconds from SIGKILL of a worker inside a long step to the run's next step journaled.

    Also the seconds from the kill to the dead worker's lease expiring. Processes form a chain:
    each one rescues the previous victim's run, then is the only worker when the next run
    starts, so it claims it and becomes the next victim. The rescuer is therefore always
    already running (and polling) when the victim dies.
    """
    totals: list[float] = []
    to_expiry: list[float] = []
    async with fresh_schema(base_url) as url, Corral(url) as corral:
        victim = (await start_workers(url, 1, *RESCUE_OPTIONS))[0]
        rescuer: WorkerProcess | None = None
        try:
            for _ in range(samples):
                handle: RunHandle[Any] = await corral.start(HOLD_THEN_STEP, None)
                run_id = handle.run_id

                async def in_long_step(run_id: str = run_id) -> bool:
                    journal = await corral.store.load_journal(run_id)
                    return bool(journal) and journal[0].status == "started"

                await _wait_for(in_long_step, 30, "the victim to enter its long step")
                rescuer = (await start_workers(url, 1, *RESCUE_OPTIONS))[0]
                await asyncio.sleep(3 * HEARTBEAT)  # the rescuer is polling; a lease renewed
                await victim.kill()
                killed_at = time.time()
                held = await corral.get_run(run_id)
                assert held.status == "running", held
                assert held.lease_expires_at is not None, held
                await handle.wait_for_result(timeout=30, poll=0.01)
                journal = await corral.journal(run_id)
                resumed_at = journal[1].finished_at
                assert resumed_at is not None
                totals.append(resumed_at - killed_at)
                to_expiry.append(held.lease_expires_at - killed_at)
                victim, rescuer = rescuer, None
        finally:
            await victim.kill()
            if rescuer is not None:
                await rescuer.kill()
    return totals, to_expiry


async def paused_runs(base_url: str, *, count: int, workers: int) -> list[Row]:
    """Start `count` runs, drain them to a wait_for_signal with worker processes; their size."""
    async with fresh_schema(base_url) as url:
        started = time.perf_counter()
        async with Corral(url) as corral:
            await create_runs(corral, PARK, None, count)
        created = time.perf_counter() - started
        async with WaitSampler(url) as waits:
            timing = await drain(url, workers, concurrency=64, timeout=600)
        parked = timing["ended"] - timing["started"]
        async with Corral(url) as corral:
            counts = await corral.store.count_runs()
        if counts["waiting"] != count:
            raise AssertionError(f"{counts['waiting']} of {count} runs are waiting: {counts}")
        sizes = await query_one(
            url,
            "SELECT pg_total_relation_size('runs'), pg_total_relation_size('steps'),"
            " pg_total_relation_size('signals'), pg_relation_size('runs')",
        )
        (indexes,) = await query_one(
            url,
            "SELECT string_agg(indexrelname || ' ' || pg_relation_size(indexrelid) / %s,"
            " ', ' ORDER BY pg_relation_size(indexrelid) DESC)"
            " FROM pg_stat_user_indexes WHERE schemaname = current_schema()"
            " AND relname = 'runs'",
            (count,),
        )
    runs_size, steps_size, signals_size, runs_heap = (int(s) for s in sizes)
    total = runs_size + steps_size + signals_size
    return [
        Row(
            f"pg: start {count:,} runs (one process)",
            created,
            "s",
            f"{count / created:,.0f} runs/s",
        ),
        Row(
            f"pg: run {count:,} runs to a wait ({workers} processes)",
            parked,
            "s",
            f"{count / parked:,.0f} runs/s; {timing['operations'] / max(timing['batches'], 1):.1f}"
            f" writes/commit; workers' CPU {timing['cpu'] / parked:.2f} cores",
        ),
        waits.row(f"pg:   server backends, parking ({workers} processes)"),
        Row(
            f"pg: {count:,} paused runs in the database",
            total / count,
            "bytes/run",
            f"{total / 2**20:.1f} MiB in all, indexes included",
        ),
        Row(
            "pg:   of which runs",
            runs_size / count,
            "bytes/run",
            f"table {runs_heap / count:.0f} (dead row versions included),"
            f" indexes {(runs_size - runs_heap) / count:.0f}",
        ),
        Row("pg:   runs' indexes", (runs_size - runs_heap) / count, "bytes/run", indexes),
        Row("pg:   of which steps", steps_size / count, "bytes/run", "one signal step per run"),
        Row("pg:   of which signals", signals_size / count, "bytes/run", "none sent"),
    ]


async def scoped_reads(base_url: str, *, runs: int, samples: int) -> dict[str, float]:
    """Microseconds (median) of the server's two common reads, a run by id and a page of 50
    runs, unscoped and inside a tenant scope (row-level security, `corral.store.tenant_scope`).

    `runs` runs of two tenants are parked; the reads alternate so that drift hits both alike.
    """
    async with fresh_schema(base_url) as url:
        for tenant in ("acme", "globex"):
            async with Corral(url, tenant=tenant) as corral:
                await create_runs(corral, PARK, None, runs // 2)
        async with Corral(url) as corral:
            store = corral.store
            some = await store.list_runs(tenant="acme", limit=1)
            run_id = some[0].run_id

            async def get_run() -> object:
                return await store.get_run(run_id)

            async def page() -> object:
                return await store.list_runs(tenant="acme", limit=50)

            timings: dict[str, list[float]] = {}
            for _ in range(samples):
                for name, read in (("get", get_run), ("page", page)):
                    for scoped in (False, True):
                        started = time.perf_counter()
                        if scoped:
                            with tenant_scope("acme"):
                                await read()
                        else:
                            await read()
                        key = f"{name}{'_scoped' if scoped else ''}"
                        timings.setdefault(key, []).append((time.perf_counter() - started) * 1e6)
    return {key: _median(values) for key, values in timings.items()}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


async def run_all(base_url: str, *, quick: bool) -> list[Row]:
    rows: list[Row] = []
    steps = 20

    async with fresh_schema(base_url) as url:
        raw = await raw_postgres_per_step(url, 300 if quick else 1000)
    async with fresh_schema(base_url) as url:
        per_step, per_run = await durable_per_step(url, runs=20 if quick else 60, steps=steps)
    rows.append(Row("pg: raw psycopg insert+commit", raw, "µs/step", "autocommit, one statement"))
    rows.append(
        Row(
            f"pg: durable step, 1 run of {steps}",
            per_step,
            "µs/step",
            f"{per_step / raw:.2f}× raw; a whole {steps}-step run: {per_run:.0f} µs",
        )
    )
    async with fresh_schema(base_url) as url:
        rate, per_commit = await concurrent_steps_per_second(
            url, runs=32, steps=50 if quick else 200
        )
    rows.append(
        Row(
            "pg: 32 concurrent runs, one process",
            rate,
            "steps/s",
            f"{rate / (1e6 / raw):.2f}× raw; {per_commit:.1f} writes per commit",
        )
    )

    # 1,500 runs last several seconds per size: 400 lasted about one, and varied ±15% run to run.
    runs = 200 if quick else 1500
    for workers in (1, 2, 3, 4):
        rows.extend(await throughput(base_url, workers=workers, runs=runs, steps=steps))

    reads = await scoped_reads(
        base_url, runs=2000 if quick else 20000, samples=200 if quick else 1000
    )
    for name, what in (("get", "a run by id"), ("page", "a page of 50 runs")):
        plain, scoped = reads[name], reads[f"{name}_scoped"]
        rows.append(
            Row(
                f"pg: {what}, in a tenant scope",
                scoped,
                "µs",
                f"unscoped {plain:.0f} µs: row-level security and its transaction add"
                f" {scoped - plain:+.0f} µs",
            )
        )

    totals, to_expiry = await lease_takeover(base_url, samples=3 if quick else 5)
    target = LEASE_TTL + 2 * HEARTBEAT
    total = _median(totals)
    rows.append(
        Row(
            "pg: SIGKILL → run resumed elsewhere",
            total,
            "s",
            f"median of {len(totals)}; target ≤ {target:.1f} s (ttl + 2 heartbeats):"
            f" {'met' if max(totals) <= target else 'MISSED'}; max {max(totals):.2f} s;"
            f" lease expired {_median(to_expiry):.2f} s after the kill",
        )
    )

    rows.extend(
        await paused_runs(base_url, count=10_000 if quick else 100_000, workers=2 if quick else 4)
    )
    return rows
