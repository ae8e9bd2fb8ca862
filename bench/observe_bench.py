"""Observability benchmarks: searches (and other views) of a journal of a million steps.

`python -m bench.observe_bench [--steps N] [--postgres URL | --no-postgres]`, or as part of
`python -m bench`. The size is CORRAL_BENCH_STEPS (default 100,000; 20,000 with --quick); the
issue's target is measured with CORRAL_BENCH_STEPS=1000000.

1. A generator bulk-inserts journaled agent runs (fast SQL: executemany on SQLite, COPY on
   PostgreSQL; not the engine) into a fresh SQLite file and a fresh PostgreSQL schema: runs of
   about 15 steps (model calls with tool calls, tool calls with arguments and values), several
   tenants, agents, tools and models, supervisors delegating to child agents, some failed runs
   and some waiting on an approval, created over 30 days up to `NOW`. The data is the same on
   both databases and from run to run (seeded).
2. The catch-up indexer indexes it all (timed and reported on its own: this is the warm-up).
3. Each named query of `QUERIES` is timed: the median of `REPEATS` runs after one warm-up run.
   Another view (a trace, the cost report) is benchmarked by appending a `(name, async fn(store))`
   to `QUERIES`; `run_id_of(i)`, `NOW`, `TENANTS`, `AGENTS` and `TOOLS` describe the data.

It also measures what the search triggers cost the engine's hot path: a durable step, and
32 concurrent runs, with the triggers and with them dropped (medians of interleaved tries).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.engine_bench import Row, concurrent_steps_per_second, durable_per_step
from bench.postgres_bench import DEFAULT_URL, URL_ENV, fresh_schema, unreachable
from corral.observe.cost_days import roll_up
from corral.observe.costs import cost_report, run_cost
from corral.observe.search import catch_up, search_runs
from corral.observe.traces import load_trace
from corral.store import Store, open_store
from corral.store.postgresql import parse_postgres_url

STEPS_ENV = "CORRAL_BENCH_STEPS"
DAY = 86_400.0
NOW = float(int(time.time()))
"""The data's present: runs were created in the 30 days before it (so the last of them today,
which cost reports read from the journal, not from the daily roll-up)."""
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
AGENTS = ("refunds", "shipping", "billing", "support", "returns", "fraud", "catalog", "triage")
TOOLS = (
    "lookup_order", "issue_refund", "track_parcel", "update_address", "charge_card",
    "send_email", "open_ticket", "check_stock", "cancel_order", "verify_identity",
    "apply_coupon", "search_kb",
)  # fmt: skip
MODELS = ("openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest", "openai:gpt-4.1")
REPEATS = 7
_SEED = 7

Query = Callable[[Store], Awaitable[object]]


def run_id_of(index: int) -> str:
    """The id of the generator's `index`-th run (deterministic, so queries can name runs)."""
    return str(uuid.UUID(int=random.Random(index * 7919 + 1).getrandbits(128), version=4))


async def _search(store: Store, query: str, **filters: Any) -> object:
    hits = await search_runs(store, query, **filters)
    return hits


QUERIES: list[tuple[str, Query]] = [
    (
        'search "refund declined" --tenant acme --agent refunds --since 1d',
        lambda s: _search(s, "refund declined", tenant="acme", agent="refunds", since=NOW - DAY),
    ),
    (
        'search "refund declined" --tenant acme',
        lambda s: _search(s, "refund declined", tenant="acme"),
    ),
    (
        'search "declined" --tenant globex --status failed --since 7d',
        lambda s: _search(s, "declined", tenant="globex", status="failed", since=NOW - 7 * DAY),
    ),
    (
        'search "parcel delayed" --tenant initech --tool track_parcel --until 20d',
        lambda s: _search(
            s, "parcel delayed", tenant="initech", tool="track_parcel", until=NOW - 20 * DAY
        ),
    ),
    (
        'search "card" --tenant hooli --agent fraud --status failed',
        lambda s: _search(s, "card", tenant="hooli", agent="fraud", status="failed"),
    ),
    (
        'search "refund -approved" --tenant umbrella --since 3d',
        lambda s: _search(s, "refund -approved", tenant="umbrella", since=NOW - 3 * DAY),
    ),
    (
        'search "customer" (every tenant, no filter)',
        lambda s: _search(s, "customer", tenant=None),
    ),
    (
        'search "A-100042" (one order id, every tenant)',
        lambda s: _search(s, "A-100042", tenant=None),
    ),
    ("costs --by agent --since 7d", lambda s: cost_report(s, by="agent", since=NOW - 7 * DAY)),
    (
        "costs --by workflow --since 7d",
        lambda s: cost_report(s, by="workflow", since=NOW - 7 * DAY),
    ),
    ("costs --by model (all time)", lambda s: cost_report(s, by="model")),
    (
        "costs --by user --since 1d --tenant globex",
        lambda s: cost_report(s, by="user", since=NOW - DAY, tenant="globex"),
    ),
    ("runs cost (one run)", lambda s: run_cost(s, run_id_of(4242))),
    ("runs trace (one run, with its child runs)", lambda s: load_trace(s, run_id_of(4242))),
]
"""The named queries, each timed on each database."""


# -- the data ----------------------------------------------------------------------------------

_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "nu",
    "re",
    "sa",
    "ti",
    "vo",
    "pe",
    "da",
    "fe",
    "gu",
    "hi",
    "jo",
    "ku",
    "la",
    "ma",
    "ne",
    "ro",
    "su",
    "ta",
    "ve",
    "wi",
    "zo",
    "bra",
    "cle",
)
_DOMAIN = (
    "order",
    "parcel",
    "shipped",
    "delivered",
    "delayed",
    "lost",
    "damaged",
    "refund",
    "refunds",
    "refunded",
    "declined",
    "approved",
    "pending",
    "address",
    "invoice",
    "charge",
    "card",
    "bank",
    "payment",
    "customer",
    "account",
    "warehouse",
    "stock",
    "coupon",
    "discount",
    "return",
    "label",
    "courier",
    "tracking",
    "subscription",
    "cancel",
    "cancelled",
    "identity",
    "verified",
    "fraud",
    "suspicious",
    "chargeback",
    "receipt",
    "balance",
    "credit",
    "debit",
    "email",
)
_REASONS = (
    "insufficient funds", "card expired", "do not honor", "suspected fraud",
    "limit exceeded", "issuer unavailable",
)  # fmt: skip


class _Words:
    """Text with a realistic spread of words: domain words and a long tail of others."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        tail = {
            "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(6000)
        }
        self.tail = sorted(tail)
        self.cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(tail))))

    def sentence(self, count: int, *must: str) -> str:
        words = self.rng.choices(self.tail, cum_weights=self.cumulative, k=count)
        words += self.rng.choices(_DOMAIN, k=max(1, count // 4))
        words += must
        self.rng.shuffle(words)
        return " ".join(words).capitalize() + "."


@dataclass
class _Journal:
    """Rows of a batch of runs, in the columns the tables are loaded with."""

    runs: list[tuple[Any, ...]]
    steps: list[tuple[Any, ...]]


RUN_COLUMNS = (
    "run_id, tenant, workflow, workflow_version, status, input, result, error, parent_run_id,"
    " parent_step_seq, created_at, updated_at, claims, started_by, root_run_id"
)
STEP_COLUMNS = (
    "run_id, seq, kind, name, status, at_most_once, detail, result, error, started_at, finished_at"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _Generator:
    """Deterministic agent runs, `batch` at a time, until `steps` steps are made."""

    def __init__(self, steps: int) -> None:
        self.rng = random.Random(_SEED)
        self.words = _Words(self.rng)
        self.target = steps
        self.made = 0
        self.runs = 0

    def batches(self, runs_per_batch: int = 2000) -> Iterator[_Journal]:
        while self.made < self.target:
            journal = _Journal([], [])
            for _ in range(runs_per_batch):
                if self.made >= self.target:
                    break
                self._agent_run(journal, tenant=self.rng.choice(TENANTS), parent=None)
            yield journal

    def _agent_run(
        self, journal: _Journal, *, tenant: str, parent: tuple[str, int, str, float] | None
    ) -> tuple[str, str]:
        """Journal one agent run (and its child, for a triage run); its id and workflow."""
        rng, words = self.rng, self.words
        index = self.runs
        self.runs += 1
        run_id = run_id_of(index)
        position = len(journal.runs)  # a parent's row goes before its children's
        if parent is None:
            created = NOW - 30 * DAY * (1 - self.made / self.target) - 60 * rng.random()
            agent = rng.choice(AGENTS)
        else:
            created = parent[3] + 2.0
            agent = rng.choice(AGENTS[:-1])
        order_id = f"A-{100000 + index}"  # one order per run: a needle to search for
        declined = agent == "refunds" and rng.random() < 0.15
        fate = rng.random()
        status = "succeeded"
        if fate < 0.04 or (declined and fate < 0.3):
            status = "failed"
        elif fate < 0.06 and parent is None:
            status = "waiting"
        question = words.sentence(rng.randint(8, 25), "order", order_id)
        task: dict[str, Any] = {
            "input": question,
            "depth": 0 if parent is None else 1,
            "thread": [],
            "scopes": [],
        }
        at = created
        seq = 0
        calls = rng.randint(3, 8)
        tools = rng.sample(TOOLS, k=min(calls, len(TOOLS)))
        steps: list[tuple[Any, ...]] = []
        model = rng.choice(MODELS)

        def model_step(content: str, call: tuple[str, dict[str, Any]] | None) -> None:
            nonlocal seq, at
            seq += 1
            took = 0.4 + rng.random() * 2.5
            tool_calls = []
            if call is not None:
                tool_calls.append(
                    {"call_id": f"call_{seq}", "name": call[0], "arguments": json.dumps(call[1])}
                )
            result = {
                "message": {
                    "role": "assistant",
                    "content": content,
                    "tool_calls": tool_calls,
                    "tool_call_id": None,
                    "author": agent,
                },
                "usage": {
                    "input_tokens": 200 + seq * 150 + rng.randrange(100),
                    "output_tokens": 20 + rng.randrange(200),
                    "requests": 1,
                },
                "model": model,
                "finish_reason": "tool_calls" if call else "stop",
                "fallbacks": [],
            }
            steps.append(
                (run_id, seq, "step", f"model:{agent}", "succeeded", 0, None, _dumps(result),
                 None, at, at + took)
            )  # fmt: skip
            at += took

        def tool_step(name: str, arguments: dict[str, Any], value: Any, error: str | None) -> None:
            nonlocal seq, at
            seq += 1
            took = 0.02 + rng.random() * 0.5
            detail: dict[str, Any] = {
                "input": {"call_id": f"call_{seq - 1}", "tool": name, "arguments": arguments}
            }
            result = None
            error_json = None
            if error is None:
                result = _dumps(
                    {"status": "done", "value": value, "arguments": None,
                     "decision": {"effect": "allow", "reason": "no rule matched", "policy": None,
                                  "version": None, "rule": None, "approval": None,
                                  "timeout": None}}
                )  # fmt: skip
            else:
                detail["attempts"] = [{"attempt": 1, "at": at, "code": "exception",
                                       "error": error, "decision": "not retryable"}]  # fmt: skip
                error_json = json.dumps(
                    {"code": "exception", "type": error.split(":")[0],
                     "message": error.split(": ", 1)[-1], "module": "builtins",
                     "traceback": "Traceback (most recent call last):\n  ...\n" + error}
                )  # fmt: skip
            steps.append(
                (run_id, seq, "step", f"tool:{name}", "failed" if error else "succeeded", 0,
                 json.dumps(detail), result, error_json, at, at + took)
            )  # fmt: skip
            at += took

        for number, name in enumerate(tools):
            arguments: dict[str, Any] = {"order_id": order_id}
            if name in ("issue_refund", "charge_card"):
                arguments["amount"] = round(rng.random() * 400, 2)
            if name == "send_email":
                arguments["body"] = words.sentence(rng.randint(10, 30))
            model_step(words.sentence(rng.randint(0, 12)), (name, arguments))
            error = None
            value: Any = {"order_id": order_id, "note": words.sentence(rng.randint(5, 20))}
            if name == "track_parcel":
                value["status"] = rng.choice(["shipped", "delivered", "delayed", "lost"])
                value["carrier"] = rng.choice(["UPS", "DHL", "La Poste", "FedEx"])
            if name == "issue_refund":
                if declined:
                    reason = rng.choice(_REASONS)
                    error = f"RefundDeclined: refund of {arguments['amount']} declined: {reason}"
                else:
                    value["refund"] = "approved"
            if name == "charge_card" and rng.random() < 0.05:
                error = f"CardDeclined: payment declined by the bank: {rng.choice(_REASONS)}"
            if status == "failed" and number == len(tools) - 1 and error is None:
                error = rng.choice(
                    ["StepTimeout: tool call took longer than 30s",
                     "ServiceUnavailable: warehouse API returned 503"]
                )  # fmt: skip
            tool_step(name, arguments, value, error)
            if parent is None and agent == "triage" and number == 0:
                seq += 1
                child, workflow = self._agent_run(
                    journal, tenant=tenant, parent=(run_id, seq, run_id, at)
                )
                steps.append(
                    (run_id, seq, "child.start", workflow, "succeeded", 0, None,
                     json.dumps(child), None, at, at + 0.01)
                )  # fmt: skip
            if status == "failed" and number == len(tools) - 1:
                break
        outcome: str | None = None
        error_text: str | None = None
        if status == "succeeded":
            answer = words.sentence(rng.randint(10, 40), order_id)
            if declined:
                answer = (
                    f"Sorry, the refund for order {order_id} was declined by the bank. {answer}"
                )
            model_step(answer, None)
            outcome = json.dumps(answer)
        elif status == "failed":
            last = steps[-1]
            error_text = last[8] or json.dumps({"code": "failed", "type": "RunFailed",
                                                "message": "the run failed"})  # fmt: skip
        else:
            model_step(words.sentence(6), ("issue_refund", {"order_id": order_id}))
            seq += 1
            steps.append(
                (run_id, seq, "step", "approval:issue_refund", "started", 0,
                 json.dumps({"input": {"tool": "issue_refund", "reason": "over 250"}}), None,
                 None, at, None)
            )  # fmt: skip
        root = parent[2] if parent is not None else run_id
        journal.runs.insert(
            position,
            (run_id, tenant, f"agent:{agent}", "1", status, json.dumps(task), outcome, error_text,
             parent[0] if parent else None, parent[1] if parent else None, created, at, 1,
             f"user-{rng.randrange(40)}", root),
        )  # fmt: skip
        journal.steps.extend(steps)
        self.made += len(steps)
        return run_id, f"agent:{agent}"


# -- loading -----------------------------------------------------------------------------------


def load_sqlite(path: Path, steps: int) -> tuple[int, int, float]:
    """Bulk-insert the journal into a Corral SQLite file; (runs, steps, seconds)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    generator = _Generator(steps)
    started = time.perf_counter()
    for journal in generator.batches():
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 15)})", journal.runs
        )
        conn.executemany(
            f"INSERT INTO steps ({STEP_COLUMNS}) VALUES ({', '.join('?' * 11)})", journal.steps
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return generator.runs, generator.made, elapsed


async def load_postgres(url: str, steps: int) -> tuple[int, int, float]:
    """COPY the journal into a Corral PostgreSQL schema; (runs, steps, seconds)."""
    conninfo, schema = parse_postgres_url(url)
    generator = _Generator(steps)
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for journal in generator.batches():
            async with conn.transaction(), conn.cursor() as cursor:
                for table, columns, rows in (
                    ("runs", RUN_COLUMNS, journal.runs),
                    ("steps", STEP_COLUMNS, journal.steps),
                ):
                    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
                        sql.Identifier(table), sql.SQL(columns)
                    )
                    async with cursor.copy(copy) as pipe:
                        for row in rows:
                            await pipe.write_row(row)
        await conn.execute("ANALYZE")
        await conn.commit()
    return generator.runs, generator.made, time.perf_counter() - started


# -- timing ------------------------------------------------------------------------------------


async def time_queries(store: Store, label: str, queries: list[tuple[str, Query]]) -> list[Row]:
    rows: list[Row] = []
    for name, query in queries:
        await query(store)  # warm-up: caches, statements, the first catch-up
        times = []
        result: object = None
        for _ in range(REPEATS):
            started = time.perf_counter()
            result = await query(store)
            times.append(time.perf_counter() - started)
        found = f"{len(result)} hits; " if isinstance(result, list) else ""
        rows.append(
            Row(
                f"{label}: {name}",
                statistics.median(times) * 1e3,
                "ms",
                f"{found}p50 of {REPEATS}, max {max(times) * 1e3:.1f} ms",
            )
        )
    return rows


async def index_all(store: Store, label: str, steps: int) -> list[Row]:
    """The first catch-up of the search index, then the first cost roll-up."""
    started = time.perf_counter()
    changes = await catch_up(store, batch=2000)
    elapsed = time.perf_counter() - started
    started = time.perf_counter()
    hours = await roll_up(store)
    summed = time.perf_counter() - started
    return [
        Row(
            f"{label}: catch-up indexing of {steps:,} steps",
            elapsed,
            "s",
            f"{changes:,} changes, {changes / elapsed:,.0f}/s (the warm-up; not in query times)",
        ),
        Row(
            f"{label}: first cost roll-up",
            summed,
            "s",
            f"{hours} hours summed (the warm-up; not in the query times)",
        ),
    ]


async def sqlite_rows(folder: Path, steps: int) -> list[Row]:
    path = folder / "observe.db"
    url = f"sqlite:///{path}"
    store = open_store(url)
    await store.open()  # creates the schema
    await store.close()
    runs, made, seconds = await asyncio.to_thread(load_sqlite, path, steps)
    rows = [
        Row(
            f"sqlite: load {made:,} steps ({runs:,} runs)",
            seconds,
            "s",
            f"{made / seconds:,.0f} steps/s, executemany (search triggers on)",
        )
    ]
    store = open_store(url)
    await store.open()
    try:
        rows += await index_all(store, "sqlite", made)
        rows += await time_queries(store, "sqlite", QUERIES)
    finally:
        await store.close()
    size = _bytes(folder, "observe.db*")
    rows.append(Row("sqlite: database file", size / 2**20, "MiB", "journal and search index"))
    return rows


def _bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern))


async def postgres_rows(base_url: str, steps: int) -> list[Row]:
    async with fresh_schema(base_url) as url:
        store = open_store(url)
        await store.open()
        await store.close()
        runs, made, seconds = await load_postgres(url, steps)
        rows = [
            Row(
                f"pg: load {made:,} steps ({runs:,} runs)",
                seconds,
                "s",
                f"{made / seconds:,.0f} steps/s, COPY (search triggers on)",
            )
        ]
        store = open_store(url)
        await store.open()
        try:
            rows += await index_all(store, "pg", made)
            await _vacuum(url)
            rows += await time_queries(store, "pg", QUERIES)
        finally:
            await store.close()
        rows.append(await _pg_sizes(url))
    return rows


async def _vacuum(url: str) -> None:
    """What autovacuum does after a bulk load: statistics, and the GIN pending list merged."""
    conninfo, schema = parse_postgres_url(url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        tables = (
            "search_docs",
            "search_runs",
            "search_run_tags",
            "search_changes",
            "cost_day_keys",
            "cost_hours",
        )
        for table in tables:
            await conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))


async def _pg_sizes(url: str) -> Row:
    conninfo, schema = parse_postgres_url(url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        cursor = await conn.execute(
            "SELECT pg_total_relation_size('runs') + pg_total_relation_size('steps'),"
            " pg_total_relation_size('search_docs') + pg_total_relation_size('search_runs')"
            " + pg_total_relation_size('search_run_tags')"
        )
        journal, index = (int(v) for v in (await cursor.fetchone() or (0, 0)))
    return Row(
        "pg: search index size", index / 2**20, "MiB", f"the journal: {journal / 2**20:,.0f} MiB"
    )


# -- the hot path --------------------------------------------------------------------------------

_TRIGGERS = (
    ("runs", "search_run_inserted"),
    ("runs", "search_run_updated"),
    ("steps", "search_step_inserted"),
    ("steps", "search_step_updated"),
    ("steps", "search_step_deleted"),
)


async def _without_triggers(url: str) -> None:
    """Create the schema at `url`, then drop the search triggers (the engine without search)."""
    store = open_store(url)
    await store.open()
    await store.close()
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.removeprefix("sqlite:///").split("?")[0])
        for _, trigger in _TRIGGERS:
            db.execute(f"DROP TRIGGER {trigger}")
        db.commit()
        db.close()
        return
    conninfo, schema = parse_postgres_url(url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for table, trigger in _TRIGGERS:
            await conn.execute(
                sql.SQL("DROP TRIGGER {} ON {}").format(
                    sql.Identifier(trigger), sql.Identifier(table)
                )
            )


async def hot_path_rows(label: str, fresh: Callable[[], Any], *, tries: int) -> list[Row]:
    """Durable-step cost and 32-run throughput, with the search triggers and without."""
    per_step: dict[bool, list[float]] = {True: [], False: []}
    rate: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(tries):
        for triggers in (True, False):
            async with fresh() as url:
                if not triggers:
                    await _without_triggers(url)
                per_step[triggers].append((await durable_per_step(url, runs=20, steps=20))[0])
            async with fresh() as url:
                if not triggers:
                    await _without_triggers(url)
                rate[triggers].append(
                    (await concurrent_steps_per_second(url, runs=32, steps=100))[0]
                )
    with_, without = statistics.median(per_step[True]), statistics.median(per_step[False])
    fast, slow = statistics.median(rate[False]), statistics.median(rate[True])
    return [
        Row(
            f"{label}: durable step, search triggers on",
            with_,
            "µs/step",
            f"{(with_ / without - 1) * 100:+.1f}% vs off ({without:.0f} µs); median of {tries}",
        ),
        Row(
            f"{label}: 32 concurrent runs, search triggers on",
            slow,
            "steps/s",
            f"{(slow / fast - 1) * 100:+.1f}% vs off ({fast:,.0f}/s); median of {tries}",
        ),
    ]


# -- entry points ----------------------------------------------------------------------------


def steps_wanted(*, quick: bool) -> int:
    return int(os.environ.get(STEPS_ENV) or (20_000 if quick else 100_000))


PARTS = ("all", "queries", "hot-path")


async def run_all(
    postgres_url: str | None, *, quick: bool, part: str = "all", sqlite: bool = True
) -> list[Row]:
    """Every observability benchmark: SQLite unless `sqlite` is false, PostgreSQL when
    `postgres_url` is given; `part` narrows it to the queries on a large journal or to the write
    path's cost."""
    steps = steps_wanted(quick=quick)
    queries, hot_path = part in ("all", "queries"), part in ("all", "hot-path")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="corral-observe-") as tmp:
        if queries and sqlite:
            rows += await sqlite_rows(Path(tmp), steps)
        counter = iter(range(1_000_000))

        class _SQLiteFile:
            async def __aenter__(self) -> str:
                return f"sqlite:///{Path(tmp) / f'hot-{next(counter)}.db'}"

            async def __aexit__(self, *exc: object) -> None:
                return None

        if hot_path and sqlite:
            rows += await hot_path_rows("sqlite", _SQLiteFile, tries=3 if quick else 7)
    if postgres_url is not None:
        if queries:
            rows += await postgres_rows(postgres_url, steps)
        if hot_path:
            rows += await hot_path_rows(
                "pg", lambda: fresh_schema(postgres_url), tries=3 if quick else 7
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.observe_bench", description=__doc__)
    parser.add_argument("--steps", type=int, help=f"journaled steps (default: ${STEPS_ENV})")
    parser.add_argument("--quick", action="store_true", help="smaller default size")
    parser.add_argument("--postgres", metavar="URL", help="the PostgreSQL database to use")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument(
        "--part",
        choices=PARTS,
        default="all",
        help="queries: load a journal and time the queries; hot-path: the write path's cost "
        "with the search triggers and without",
    )
    args = parser.parse_args()
    if args.steps:
        os.environ[STEPS_ENV] = str(args.steps)
    url: str | None = None
    if not args.no_postgres:
        url = args.postgres or os.environ.get(URL_ENV) or DEFAULT_URL
        why = asyncio.run(unreachable(url))
        if why is not None:
            print(f"PostgreSQL skipped: {url} is unreachable ({why})", file=sys.stderr)
            url = None
    rows = asyncio.run(run_all(url, quick=args.quick, part=args.part, sqlite=not args.no_sqlite))
    from bench.__main__ import print_table

    print_table(rows)


if __name__ == "__main__":
    main()
