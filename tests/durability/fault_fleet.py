"""The app of the reliability fault suite, and the faults it meets.

`python -m durability.fault_fleet DB_URL --ledger LEDGER --seed SEED` is one worker process: it
runs the `clerk` agent until SIGTERM, the test process going away, or `--max-seconds`. The test
(tests/durability/test_reliability_faults.py) starts two or three of them, kills them with
SIGKILL at random, and serves their model (`openai:fault-model`, falling back to
`openai:backup-model`) from an `OpenAICompatibleServer` on 127.0.0.1 whose answers
`ModelRules` decides.

Faults, all seeded, so a failing seed can be replayed:

- tools (`tool_fault`): a passing failure (`RetryStep`), a lost connection, a hang past the
  tool timeout, or a *lost response* (the effect is applied, then the connection drops: the
  retry, with the same idempotency key, must not apply it again). Decided from the seed, the
  idempotency key and the attempt, so a retry of the same call can succeed. `lookup` of an
  order that does not exist fails for good (the agent is told, and answers so).
- the model (`ModelRules`): 429 (with a short Retry-After), 503, and hangs longer than the
  model timeout, decided from the seed, the request body and how often that very body was
  seen (a retried request is the same body again); and outages of the primary model, windows
  of the server's clock laid out from the seed, during which every call to it fails: breakers
  open, calls go to the fallback, probes close them once it is back.

The model's part is `plan`: what the clerk does for each kind of task. Every effect lands in a
ledger (an SQLite file apart from Corral's database, like a remote system's): `calls` has every
tool call with its fault, `effects` every applied effect, UNIQUE by idempotency key (the
downstream deduplication Corral's contract relies on), with the logical operation it was
(`subject`), so an effect applied twice under two keys shows; `fallbacks` has every call that
reached the fallback model, with the worker that made it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import faulthandler
import hashlib
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from corral import Corral, current_step
from corral.agents import Agent, Escalation
from corral.errors import RetryStep
from corral.models import Model, ModelRequest, ModelResponse, resolve_model
from corral.models.scripted import Call
from corral.reliability import BreakerConfig, RetryPolicy, dependencies_for
from corral.testing.model_servers import Hang, ScriptItem, ServerFailure, ServerReply
from corral.tools import ToolContext, tool

from .worker_process import READY, dump_tasks

PRIMARY = "fault-model"
"""The model the clerk asks first, as the server sees its name."""
BACKUP = "backup-model"
"""Its fallback, on the same server (another endpoint, so another breaker)."""

# Every timing is scaled down, so that a few hundred runs meet every fault in seconds.
MODEL_TIMEOUT = 0.8
"""Seconds a model call may take (`Agent.model_timeout`); the HTTP client's is longer."""
TOOL_TIMEOUT = 0.3
HANG_SECONDS = 3.0
"""How long a hung model request or tool call holds on: well past its timeout."""
RETRY = RetryPolicy(
    max_attempts=3, initial_delay=0.1, multiplier=2.0, max_delay=1.0, jitter=0.2, run_budget=10
)
BREAKER = BreakerConfig(failure_rate=0.5, window=5.0, min_calls=5, open_for=1.0, half_open_probes=2)
MAX_STEPS = 8
MAX_IDENTICAL_CALLS = 3
ESCALATE_TO = "ops"

Kind = Literal["order", "missing", "escalate", "runaway", "stubborn"]
KINDS: dict[Kind, float] = {
    "order": 0.6,  # reserve and charge (in parallel), ship, answer
    "missing": 0.1,  # look up an order that does not exist: told so, answers so
    "escalate": 0.1,  # look up, then ask a human: waits for ever (nobody answers)
    "runaway": 0.1,  # looks up page after page: stopped by max_steps
    "stubborn": 0.1,  # looks the same page up again and again: stopped as a repeated call
}
EFFECT_TOOLS = ("reserve", "charge", "ship")
"""The tools with an effect (in the ledger's `effects`); `lookup` only reads."""

ToolFault = Literal["ok", "retry_step", "connection", "hang", "lost_response"]
TOOL_FAULTS: tuple[tuple[ToolFault, float], ...] = (
    ("retry_step", 0.10),
    ("connection", 0.04),
    ("hang", 0.05),
    ("lost_response", 0.08),
)

PRIMARY_FAULTS = {"429": 0.07, "503": 0.07, "hang": 0.04}
BACKUP_FAULTS = {"429": 0.03, "503": 0.03, "hang": 0.02}
OUTAGE_FIRST = 2.0
"""Seconds after the first request before the primary's first outage (plus up to one more)."""
OUTAGE_EVERY = 7.0
OUTAGE_FOR = 3.0
"""Long enough for failures to outweigh a breaker window's worth of earlier successes."""


def uniform(*parts: object) -> float:
    """A number in [0, 1) that depends only on `parts`: the same faults for the same seed."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def task_text(index: int, kind: Kind) -> str:
    """The input of run `index`: what the model's `plan` reads back from the conversation."""
    prefix = "X" if kind == "missing" else "O"
    return f"task {index}: {kind} {prefix}-{index}"


def pick_kind(seed: int, index: int) -> Kind:
    u = uniform(seed, "kind", index)
    for kind, weight in KINDS.items():
        if u < weight:
            return kind
        u -= weight
    return "order"


# -- the ledger: what the outside world saw -----------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT NOT NULL,
    run_id           TEXT NOT NULL,
    tool             TEXT NOT NULL,
    subject          TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    fault            TEXT NOT NULL,
    pid              INTEGER NOT NULL,
    applied          INTEGER,
    at               REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS effects (
    idempotency_key  TEXT NOT NULL UNIQUE,
    run_id           TEXT NOT NULL,
    tool             TEXT NOT NULL,
    subject          TEXT NOT NULL,
    pid              INTEGER NOT NULL,
    at               REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fallbacks (
    idempotency_key  TEXT NOT NULL,
    run_id           TEXT NOT NULL,
    pid              INTEGER NOT NULL,
    at               REAL NOT NULL
);
"""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def create_ledger(path: Path) -> None:
    """An empty ledger, made before any worker opens it."""
    with contextlib.closing(connect(path)) as conn:
        conn.executescript(SCHEMA)


class Ledger:
    """One process's connection to the ledger. Each write commits before the tool goes on, as a
    remote system acknowledges a call: a SIGKILL cannot take back what it recorded."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)
        self._pid = os.getpid()

    def call(
        self, key: str, run_id: str, tool: str, subject: str, attempt: int, fault: ToolFault
    ) -> int:
        cursor = self._conn.execute(
            "INSERT INTO calls (idempotency_key, run_id, tool, subject, attempt, fault, pid, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, run_id, tool, subject, attempt, fault, self._pid, time.time()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def apply(self, call_id: int, key: str, run_id: str, tool: str, subject: str) -> bool:
        """Apply an effect unless its key already was (then drop it): True if applied."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            applied = (
                conn.execute(
                    "INSERT INTO effects (idempotency_key, run_id, tool, subject, pid, at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
                    (key, run_id, tool, subject, self._pid, time.time()),
                ).rowcount
                == 1
            )
            conn.execute("UPDATE calls SET applied = ? WHERE call_id = ?", (applied, call_id))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return applied

    def fallback(self, key: str, run_id: str) -> None:
        self._conn.execute(
            "INSERT INTO fallbacks (idempotency_key, run_id, pid, at) VALUES (?, ?, ?, ?)",
            (key, run_id, self._pid, time.time()),
        )


class _Settings:
    """What the worker process was started with (module state: tools are module functions)."""

    seed: int = 0
    ledger: Ledger | None = None


settings = _Settings()


def _ledger() -> Ledger:
    if settings.ledger is None:
        raise RuntimeError("fault_fleet: no ledger configured (run it with --ledger)")
    return settings.ledger


def tool_fault(seed: int, key: str, attempt: int) -> ToolFault:
    """The fault of attempt `attempt` of the tool call with idempotency key `key`."""
    u = uniform(seed, "tool", key, attempt)
    for fault, rate in TOOL_FAULTS:
        if u < rate:
            return fault
        u -= rate
    return "ok"


async def _faulty_call(tool_name: str, subject: str, ctx: ToolContext, *, effect: bool) -> str:
    step = current_step()
    assert step is not None
    fault = tool_fault(settings.seed, ctx.idempotency_key, step.attempt)
    ledger = _ledger()
    call_id = ledger.call(ctx.idempotency_key, ctx.run_id, tool_name, subject, step.attempt, fault)
    # Real I/O: the parallel calls of one turn overlap, and the step is journaled as started.
    await asyncio.sleep(0.005 + 0.02 * uniform(settings.seed, "latency", call_id))
    if fault == "hang":
        await asyncio.sleep(HANG_SECONDS)  # abandoned at the tool timeout
    elif fault == "retry_step":
        raise RetryStep(f"{tool_name}: the service answered 503")
    elif fault == "connection":
        raise ConnectionError(f"{tool_name}: connection reset before the request was sent")
    if effect:
        ledger.apply(call_id, ctx.idempotency_key, ctx.run_id, tool_name, subject)
    if fault == "lost_response":
        raise ConnectionError(f"{tool_name}: connection reset after the request was sent")
    return f"{tool_name} {subject}: ok"


@tool
async def reserve(order: str, ctx: ToolContext) -> str:
    """Reserve the stock of an order."""
    return await _faulty_call("reserve", order, ctx, effect=True)


@tool
async def charge(order: str, ctx: ToolContext) -> str:
    """Charge the customer for an order."""
    return await _faulty_call("charge", order, ctx, effect=True)


@tool
async def ship(order: str, ctx: ToolContext) -> str:
    """Ship an order."""
    return await _faulty_call("ship", order, ctx, effect=True)


@tool
async def lookup(order: str, page: int, ctx: ToolContext) -> str:
    """Read a page of an order's history."""
    if order.startswith("X-"):
        raise LookupError(f"there is no order {order}")  # not passing: never retried
    return await _faulty_call("lookup", f"{order}#{page}", ctx, effect=False)


class BackupModel(Model):
    """`openai:backup-model` (resolved from the environment on first use) that writes every
    call it gets into the ledger with the worker's pid: the suite checks that a fallback noted
    `circuit_open` came from a worker whose breaker was open."""

    name = f"openai:{BACKUP}"

    def __init__(self) -> None:
        self._inner: Model | None = None

    @property
    def base_url(self) -> str:
        return str(getattr(self._model(), "base_url", ""))

    def _model(self) -> Model:
        if self._inner is None:
            self._inner = resolve_model(self.name)
        return self._inner

    async def complete(self, request: ModelRequest) -> ModelResponse:
        step = current_step()
        assert step is not None
        _ledger().fallback(step.idempotency_key, step.run_id)
        return await self._model().complete(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            inner, self._inner = self._inner, None
            await inner.aclose()


backup = BackupModel()

clerk: Agent[Any] = Agent(
    "clerk",
    instructions="Handle the order task you are given with your tools.",
    model=f"openai:{PRIMARY}",
    fallback_models=[backup],
    tools=[reserve, charge, ship, lookup],
    retry=RETRY,
    model_timeout=MODEL_TIMEOUT,
    tool_timeout=TOOL_TIMEOUT,
    max_steps=MAX_STEPS,
    max_identical_calls=MAX_IDENTICAL_CALLS,
    breaker=BREAKER,
    escalation=Escalation(to=[ESCALATE_TO], deadline=None),
)


# -- the model: what it answers, and when it fails ----------------------------------------------

_TASK = re.compile(r"task (\d+): (\w+) (\S+)")


def plan(request: Mapping[str, Any]) -> ServerReply:
    """The clerk's next turn for a Chat Completions request, from the conversation alone."""
    messages: Sequence[Mapping[str, Any]] = request["messages"]
    first = next(m["content"] for m in messages if m["role"] == "user")
    found = _TASK.search(str(first))
    if found is None:
        return ServerReply(f"I do not understand {first!r}")
    kind, order = found.group(2), found.group(3)
    turns = sum(1 for m in messages if m["role"] == "assistant")
    results = [str(m.get("content")) for m in messages if m["role"] == "tool"]
    if kind == "order":
        if turns == 0:
            return ServerReply(
                calls=[Call("reserve", {"order": order}), Call("charge", {"order": order})]
            )
        if turns == 1:
            return ServerReply(calls=[Call("ship", {"order": order})])
    elif kind in ("missing", "escalate") and turns == 0:
        return ServerReply(calls=[Call("lookup", {"order": order, "page": 0})])
    elif kind == "escalate" and turns == 1:
        question = f"May I refund {order}? {results[-1]}"
        return ServerReply(calls=[Call("ask_human", {"question": question})])
    elif kind == "runaway":
        return ServerReply(calls=[Call("lookup", {"order": order, "page": turns})])
    elif kind == "stubborn":
        return ServerReply(calls=[Call("lookup", {"order": order, "page": 0})])
    return ServerReply(f"{order}: " + "; ".join(results))


class ModelRules:
    """The model server's answers: `plan`, or a fault (see the module's docstring).

    Called on the server's thread. `served` counts what was answered, for the suite's report.
    """

    def __init__(self, seed: int, *, outages: bool = True) -> None:
        self.seed = seed
        self.outages = outages
        self.served: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._started: float | None = None
        first = OUTAGE_FIRST + uniform(seed, "outage")
        self.windows = [
            (first + k * OUTAGE_EVERY, first + k * OUTAGE_EVERY + OUTAGE_FOR) for k in range(100)
        ]
        """The primary's outages, in seconds after the first request the server got."""

    def __call__(self, request: Mapping[str, Any]) -> ScriptItem:
        body = json.dumps(request, sort_keys=True)
        digest = hashlib.sha256(body.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            if self._started is None:
                self._started = now
            self._seen[digest] += 1
            seen = self._seen[digest]
            since = now - self._started
        model = str(request.get("model"))
        answer, label = self._fault(model, digest, seen, since)
        with self._lock:
            self.served[f"{model} {label}"] += 1
        return answer if answer is not None else plan(request)

    def in_outage(self, since: float) -> bool:
        return self.outages and any(start <= since < end for start, end in self.windows)

    def _fault(
        self, model: str, digest: str, seen: int, since: float
    ) -> tuple[ScriptItem | None, str]:
        if model == PRIMARY and self.in_outage(since):
            return ServerFailure(503, "outage: the model is down"), "outage"
        rates = PRIMARY_FAULTS if model == PRIMARY else BACKUP_FAULTS
        u = uniform(self.seed, "model", digest, seen)
        if u < rates["429"]:
            wait = 0.05 + 0.2 * uniform(self.seed, "retry-after", digest, seen)
            return ServerFailure(429, "rate limited", retry_after=wait), "429"
        u -= rates["429"]
        if u < rates["503"]:
            return ServerFailure(503, "overloaded"), "503"
        u -= rates["503"]
        if u < rates["hang"]:
            return Hang(HANG_SECONDS), "hang"
        return None, "ok"


# -- the worker process --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="durability.fault_fleet")
    parser.add_argument("database_url")
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--lease-ttl", type=float, default=1.5)
    parser.add_argument("--heartbeat", type=float, default=0.3)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    return parser.parse_args(argv)


def die_with(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux), and exit now if it already has."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(3)


async def serve(args: argparse.Namespace) -> int:
    corral = Corral(
        args.database_url,
        lease_ttl=args.lease_ttl,
        heartbeat_interval=args.heartbeat,
        poll_interval=args.poll,
    )
    corral.register(clerk)
    timed_out = False
    async with corral:
        worker = corral.worker(concurrency=args.concurrency)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
        parent = os.getppid()

        async def watchdog() -> None:
            nonlocal timed_out
            deadline = loop.time() + args.max_seconds
            while True:
                if loop.time() >= deadline or os.getppid() != parent:
                    break
                await asyncio.sleep(0.2)
            timed_out = True
            worker.stop()

        guard = asyncio.create_task(watchdog())
        print(READY, flush=True)
        try:
            stats = await worker.run(grace=5.0)
        finally:
            guard.cancel()
            # The last breaker transitions are written before the store closes.
            await dependencies_for(corral.store, corral.clock).flush()
            await clerk.aclose()
            await backup.aclose()
    print(json.dumps({"pid": os.getpid(), "claimed": stats.claimed, "outcomes": stats.outcomes}))
    return 3 if timed_out else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.parent is not None:
        die_with(args.parent)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    settings.seed = args.seed
    settings.ledger = Ledger(args.ledger)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
