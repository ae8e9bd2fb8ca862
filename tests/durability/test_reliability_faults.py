"""The reliability fault suite: runs under random faults and random kill -9, then a checker.

Three worker processes (tests/durability/fault_fleet.py) run the `clerk` agent on PostgreSQL.
Its model is an OpenAI-compatible server this test starts on 127.0.0.1, which answers 429s
(with a short Retry-After), 503s, hangs past the model timeout and whole outages of the primary
model, at random; its tools fail, lose connections, hang past their timeout and lose responses
after applying their effect, at random. Runs of five kinds (orders, missing orders, questions to
a human that nobody answers, runaway and repeating loops) are started while, every few seconds,
one worker gets SIGKILL and a fresh one takes its place. Leases are short, so a dead worker's
runs are taken over by expiry.

Once nothing is left to run, the checker requires:

- every run ended in a definite state: succeeded, failed with a named cause, or waiting for a
  human (with exactly one pending approval); none lost, none pending or running;
- no idempotent effect applied twice: not per key, not per logical operation under two keys;
  every succeeded tool step's effect is there, and every effect belongs to its step;
- breakers opened and closed as configured, from the journal of transitions: each worker's
  sequence per dependency is a path closed→open→half_open→(closed|open)…, opened at the
  configured failure rate over at least `min_calls`, half-open no sooner than `open_for` after
  opening, closed after `half_open_probes` successes; the primary model's breaker opened and
  closed at least once;
- a fallback noted `circuit_open` in a model step's result came from a worker whose breaker for
  the primary model was open (or half-open) just then.

Replay a failure with the printed seed: `CORRAL_FAULT_SEED=<seed>`. Size: `CORRAL_FAULT_RUNS`
(default 200) and `CORRAL_FAULT_KILLS`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from corral import Corral
from corral.governance.approvals import list_approvals
from corral.reliability import BreakerState
from corral.reliability.breaker_store import TransitionRow, list_transitions
from corral.testing import OpenAICompatibleServer

from . import fault_fleet
from .conftest import new_database
from .databases import PostgresDatabase, progress, unsettled_runs
from .fault_fleet import BREAKER, PRIMARY, ModelRules, clerk, create_ledger, pick_kind, task_text
from .harness import WorkerProcess

RUNS = int(os.environ.get("CORRAL_FAULT_RUNS", 200))
KILLS = int(os.environ.get("CORRAL_FAULT_KILLS", max(4, RUNS // 25)))
WORKERS = 3
CONCURRENCY = 16
LEASE_TTL = 1.5
HEARTBEAT = 0.3
KILL_GAP = (2.0, 3.5)
"""Seconds between two SIGKILLs."""
WARM_UP = 1.0
"""A victim has served this long: most kills land in a worker that is executing runs."""
DRAIN_TIMEOUT = 60.0 + RUNS * 0.2
STALL = 20.0
"""Seconds without any progress after which the fleet is stuck."""
HTTP_TIMEOUT = 10.0
"""The model client's own HTTP timeout: longer than the agent's, which must fire first."""
FALLBACK_SLACK = 2.0
"""Seconds between a breaker refusing the primary and the fallback's call being recorded
(budget bookkeeping runs in between): the breaker must have been open within them."""
TESTS_DIR = Path(__file__).resolve().parent.parent

NAMED_FAILURES = {"step_limit", "repeated_tool_call", "turn_limit", "output_invalid"}
"""Run error codes that name their cause; a failed step names its own by `error_type`."""
NAMED_STEP_FAILURES = {"ModelCallFailed", "StepTimeout", "CircuitOpen"}
VALID_MOVES = {
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "closed"),
    ("half_open", "open"),
}
"""A breaker's only moves (corral/reliability/breakers.py)."""


def seed_from_env() -> int:
    text = os.environ.get("CORRAL_FAULT_SEED")
    return int(text) if text else random.SystemRandom().randrange(2**32)


class FaultFleet:
    """The worker processes under test: spawned, SIGKILLed and replaced, all killed at close."""

    def __init__(self, folder: Path, url: str, ledger: Path, seed: int, base_url: str) -> None:
        self.folder = folder
        self.url = url
        self.ledger = ledger
        self.seed = seed
        self.base_url = base_url
        self.processes: list[WorkerProcess] = []
        self.workers: list[WorkerProcess] = []
        self.kills = 0

    def spawn(self) -> WorkerProcess:
        env = dict(os.environ)
        env.pop("CORRAL_CRASH_AT", None)
        env.update(
            PYTHONPATH=os.pathsep.join([str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])]),
            OPENAI_BASE_URL=self.base_url,
            OPENAI_API_KEY="test",
            CORRAL_MODEL_TIMEOUT=str(HTTP_TIMEOUT),
            CORRAL_MODEL_MAX_RETRIES="0",
            CORRAL_ALLOW_NETWORK_MODELS="0",
        )
        args = [
            sys.executable,
            "-m",
            "durability.fault_fleet",
            self.url,
            f"--ledger={self.ledger}",
            f"--seed={self.seed}",
            f"--parent={os.getpid()}",
            f"--concurrency={CONCURRENCY}",
            f"--lease-ttl={LEASE_TTL}",
            f"--heartbeat={HEARTBEAT}",
            f"--max-seconds={DRAIN_TIMEOUT + 300}",
        ]
        log = self.folder / f"worker-{len(self.processes)}.log"
        log_file = log.open("wb")
        proc = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self.folder
        )
        worker = WorkerProcess(proc, log, None, time.time(), log_file)
        self.processes.append(worker)
        return worker

    def start(self) -> None:
        self.workers = [self.spawn() for _ in range(WORKERS)]

    def check_alive(self) -> None:
        """No worker may die by itself: that would be a crash of Corral, not one of ours."""
        for worker in self.workers:
            code = worker.proc.poll()
            assert code is None, (
                f"seed {self.seed}: worker {worker.pid} exited with {code} on its own; its "
                f"log:\n{worker.tail()}"
            )

    async def kill_one(self, rng: random.Random) -> bool:
        self.check_alive()
        warm = [w for w in self.workers if await w.serving_for() >= WARM_UP]
        if not warm:
            return False
        victim = rng.choice(warm)
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait(timeout=30)
        victim.died_at = time.time()
        self.workers[self.workers.index(victim)] = self.spawn()
        self.kills += 1
        return True

    async def stop(self) -> None:
        """SIGTERM every worker (once it serves): each must stop gracefully, with exit code 0."""
        deadline = time.monotonic() + 30.0
        stopping = list(self.workers)
        while stopping and time.monotonic() < deadline:
            for worker in list(stopping):
                # A worker still importing would die of SIGTERM instead of stopping gracefully.
                if await worker.ready():
                    worker.proc.send_signal(signal.SIGTERM)
                    stopping.remove(worker)
            await asyncio.sleep(0.05)
        for worker in self.workers:
            try:
                code = worker.proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                code = None
            assert code == 0, f"worker {worker.pid} stopped with {code}:\n{worker.tail()}"

    def dump_stacks(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.dump_stacks()

    def close(self) -> None:
        for worker in self.processes:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(timeout=30)
            worker.log_file.close()


# -- what the checker reads ------------------------------------------------------------------


@dataclass
class Observed:
    """Everything the checker needs, read once the fleet has stopped."""

    submitted: dict[str, int]
    """Idempotency key of each run started -> its task's index."""
    runs: list[tuple[str, str, str | None, str | None]]
    """run_id, status, error, idempotency_key."""
    steps: list[tuple[str, int, str, str, str | None, str | None]]
    """run_id, seq, name, status, detail, result."""
    questions: list[str]
    """The run of each pending `ask_human` approval."""
    transitions: list[TransitionRow]
    calls: list[tuple[str, str, str, str, str, int, int | None]]
    """idempotency_key, run_id, tool, subject, fault, pid, applied."""
    effects: list[tuple[str, str, str, str]]
    """idempotency_key, run_id, tool, subject."""
    fallbacks: list[tuple[str, int, float]]
    """idempotency_key, pid, at."""
    primary: str
    """The primary model's endpoint (its breakers' dependency key)."""


async def observe(
    corral: Corral,
    database: PostgresDatabase,
    ledger: Path,
    submitted: dict[str, int],
    primary: str,
) -> Observed:
    pending = await corral.store.read_script(
        lambda d: list_approvals(corral.tenant, status="pending", limit=1_000_000)
    )
    transitions = await corral.store.read_script(lambda d: list_transitions(limit=1_000_000))
    with closing(sqlite3.connect(ledger)) as conn:
        calls = conn.execute(
            "SELECT idempotency_key, run_id, tool, subject, fault, pid, applied FROM calls"
        ).fetchall()
        effects = conn.execute(
            "SELECT idempotency_key, run_id, tool, subject FROM effects"
        ).fetchall()
        fallbacks = conn.execute("SELECT idempotency_key, pid, at FROM fallbacks").fetchall()
    return Observed(
        submitted=submitted,
        runs=database.query("SELECT run_id, status, error, idempotency_key FROM runs"),
        steps=database.query("SELECT run_id, seq, name, status, detail, result FROM steps"),
        questions=[a.run_id for a in pending if a.tool == "ask_human"],
        transitions=sorted(transitions, key=lambda t: t.transition_id),
        calls=calls,
        effects=effects,
        fallbacks=fallbacks,
        primary=primary,
    )


# -- the checker -------------------------------------------------------------------------------


@dataclass
class Report:
    """Anomalies (each must be empty) and counts (what the faults did)."""

    anomalies: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def flag(self, name: str, example: Any) -> None:
        self.anomalies[name].append(example)

    @property
    def ok(self) -> bool:
        return not any(self.anomalies.values())

    def summary(self) -> str:
        lines = [f"  {name}: {dict(sorted(c.items()))}" for name, c in self.counts.items()]
        lines += [
            f"  ANOMALY {name}: {len(items)}, e.g. {items[:3]}"
            for name, items in self.anomalies.items()
            if items
        ]
        return "\n".join(lines)


def check(seen: Observed, kinds: Mapping[int, str]) -> Report:
    report = Report()
    check_runs(seen, kinds, report)
    check_effects(seen, report)
    check_breakers(seen, report)
    check_fallbacks(seen, report)
    return report


def check_runs(seen: Observed, kinds: Mapping[int, str], report: Report) -> None:
    """Every run started is there, and ended succeeded, failed (named) or waiting (asked)."""
    by_key = {key: (run_id, status, error) for run_id, status, error, key in seen.runs}
    for key in seen.submitted:
        if key not in by_key:
            report.flag("lost runs", key)
    asked = Counter(seen.questions)
    waiting: set[str] = set()
    for key, index in seen.submitted.items():
        if key not in by_key:
            continue
        run_id, status, error = by_key[key]
        report.counts["outcomes"][status] += 1
        report.counts[f"outcomes of {kinds[index]}"][status] += 1
        if status == "failed":
            cause = json.loads(error or "{}")
            code = cause.get("code")
            named = code in NAMED_FAILURES
            if code == "step_failed":
                code = f"step_failed: {cause.get('error_type')}"
                named = cause.get("error_type") in NAMED_STEP_FAILURES
            report.counts["failures"][str(code)] += 1
            if not named:
                report.flag("failed without a named cause", (run_id, cause.get("message")))
        elif status == "waiting":
            waiting.add(run_id)
            if asked[run_id] != 1:
                report.flag("waiting without one pending question", (run_id, asked[run_id]))
        elif status != "succeeded":
            report.flag("runs in no definite state", (run_id, status))
    for run_id in set(asked) - waiting:
        report.flag("pending questions of runs not waiting", run_id)
    for _run_id, _seq, _name, _status, detail, _result in seen.steps:
        if detail and '"attempts"' in detail:
            for attempt in json.loads(detail)["attempts"]:
                if "retry_at" in attempt:
                    report.counts["retries"][str(attempt.get("code"))] += 1


def check_effects(seen: Observed, report: Report) -> None:
    """Each idempotent effect applied once: per key, per logical operation, per journaled step."""
    steps = {(run_id, seq): (name, status) for run_id, seq, name, status, *_ in seen.steps}
    per_key = Counter(key for key, *_ in seen.effects)
    per_subject = Counter((run_id, tool, subject) for _, run_id, tool, subject in seen.effects)
    for key, count in per_key.items():
        if count > 1:
            report.flag("effects applied twice under one key", key)
    for subject, count in per_subject.items():
        if count > 1:
            report.flag("effects applied twice under two keys", subject)
    applied = Counter(key for key, *_, applied in seen.calls if applied == 1)
    for key, count in applied.items():
        if count > 1:
            report.flag("keys applied by more than one call", key)
    effect_keys = set(per_key)
    for key, run_id, tool, _subject in seen.effects:
        seq = int(key.rsplit(":", 1)[1])
        name = steps.get((run_id, seq), ("", ""))[0]
        if name != f"tool:{tool}":
            report.flag("effects of no such step", (key, tool, name))
    for (run_id, seq), (name, status) in steps.items():
        tool = name.removeprefix("tool:")
        if (
            status == "succeeded"
            and tool in fault_fleet.EFFECT_TOOLS
            and f"{run_id}:{seq}" not in effect_keys
        ):
            report.flag("succeeded tool steps with no effect", (run_id, seq, name))
    report.counts["effects"]["applied"] = len(seen.effects)
    report.counts["effects"]["duplicates dropped"] = sum(
        1 for *_, applied in seen.calls if applied == 0
    )
    report.counts["tool faults"].update(fault for *_, fault, _pid, _applied in seen.calls)
    pids = defaultdict(set)
    for _key, run_id, _tool, _subject, _fault, pid, _applied in seen.calls:
        pids[run_id].add(pid)
    report.counts["effects"]["runs called from two workers"] = sum(
        1 for found in pids.values() if len(found) > 1
    )


def check_breakers(seen: Observed, report: Report) -> None:
    """Each worker's breaker of each dependency moved along valid paths, as configured."""
    paths: dict[tuple[str, str], list[TransitionRow]] = defaultdict(list)
    for row in seen.transitions:
        paths[(row.worker, row.dependency)].append(row)
        short = "model:primary" if row.dependency == seen.primary else row.dependency
        short = "model:backup" if fault_fleet.BACKUP in short else short
        report.counts["breaker transitions"][f"{short} {row.from_state}->{row.to_state}"] += 1
    for (worker, dependency), rows in paths.items():
        state, opened_at = "closed", 0.0
        for row in rows:
            problem = move_problem(row, state, opened_at)
            if problem is not None:
                report.flag(problem, (worker, dependency, row))
            opened_at = row.at if row.to_state == "open" else opened_at
            state = row.to_state
    moves = Counter(
        (r.from_state, r.to_state) for r in seen.transitions if r.dependency == seen.primary
    )
    if moves[("closed", "open")] < 1:
        report.flag("the primary model's breaker never opened", dict(moves))
    if moves[("half_open", "closed")] < 1:
        report.flag("the primary model's breaker never closed again", dict(moves))


def move_problem(row: TransitionRow, state: str, opened_at: float) -> str | None:
    """What is wrong with a breaker's move `row` from `state` (opened last at `opened_at`)."""
    move = (row.from_state, row.to_state)
    if row.from_state != state or move not in VALID_MOVES:
        return f"invalid breaker moves (from {state})"
    if move == ("closed", "open") and (
        row.calls < BREAKER.min_calls or row.failures < BREAKER.failure_rate * row.calls
    ):
        return "opened short of the configured failure rate or min_calls"
    if move == ("open", "half_open") and row.at - opened_at < BREAKER.open_for - 1e-6:
        return "half-open sooner than open_for after opening"
    if move == ("half_open", "closed") and row.calls - row.failures < BREAKER.half_open_probes:
        return "closed short of the configured probes"
    if move == ("half_open", "open") and row.failures < 1:
        return "reopened with no failed probe"
    return None


def open_periods(seen: Observed) -> dict[int, list[tuple[float, float]]]:
    """By worker pid: when its breaker of the primary model was not closed (to now if it
    stayed so, or if the worker died with its last transitions unwritten)."""
    periods: dict[int, list[tuple[float, float]]] = defaultdict(list)
    started: dict[str, float] = {}
    for row in seen.transitions:
        if row.dependency != seen.primary:
            continue
        pid = int(row.worker.split(":")[-2])
        if row.from_state == "closed":
            started[row.worker] = row.at
        elif row.to_state == "closed" and row.worker in started:
            periods[pid].append((started.pop(row.worker), row.at))
    for worker, since in started.items():
        periods[int(worker.split(":")[-2])].append((since, math.inf))
    return periods


def check_fallbacks(seen: Observed, report: Report) -> None:
    """A fallback for `circuit_open` came from a worker whose breaker was open just then."""
    periods = open_periods(seen)
    latest: dict[str, tuple[int, float]] = {}
    for key, pid, at in seen.fallbacks:
        if key not in latest or at > latest[key][1]:
            latest[key] = (pid, at)
    for run_id, seq, name, status, _detail, result in seen.steps:
        if not name.startswith("model:") or status != "succeeded" or not result:
            continue
        notes = json.loads(result).get("fallbacks") or []
        for note in notes:
            report.counts["fallbacks"][note.rsplit(": ", 1)[-1]] += 1
        if not any(note.endswith("circuit_open") for note in notes):
            continue
        key = f"{run_id}:{seq}"
        if key not in latest:
            report.flag("fallbacks with no call to the fallback", key)
            continue
        pid, at = latest[key]
        if not any(
            start <= at and end >= at - FALLBACK_SLACK for start, end in periods.get(pid, [])
        ):
            report.flag("circuit_open fallbacks while the breaker was closed", (key, pid, at))


# -- the suite ---------------------------------------------------------------------------------


async def settled(database: PostgresDatabase) -> bool:
    """Nothing left to run: no run pending, running, or waiting for a timer (a retry)."""
    [(left,)] = database.query(
        "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')"
        " OR (status = 'waiting' AND wake_at IS NOT NULL)"
    )
    return int(left) == 0


async def drain(fleet: FaultFleet, database: PostgresDatabase) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    last, moved = progress(database), time.monotonic()
    while not await settled(database):
        fleet.check_alive()
        now = progress(database)
        if now != last:
            last, moved = now, time.monotonic()
        if time.monotonic() - moved > STALL or time.monotonic() > deadline:
            fleet.dump_stacks()
            await asyncio.sleep(1.0)
            raise AssertionError(
                f"seed {fleet.seed}: the fleet stopped draining ({last[0]} runs unsettled); e.g. "
                f"{unsettled_runs(database)}; worker logs (stacks) in {fleet.folder}"
            )
        await asyncio.sleep(0.2)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[PostgresDatabase]:
    """A fresh PostgreSQL schema, dropped afterwards."""
    made = new_database("postgresql", tmp_path)
    assert isinstance(made, PostgresDatabase)
    yield made
    made.drop()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_every_run_ends_definitely_under_faults_and_kills(
    tmp_path: Path, database: PostgresDatabase
) -> None:
    seed = seed_from_env()
    print(f"faults: CORRAL_FAULT_SEED={seed} CORRAL_FAULT_RUNS={RUNS} CORRAL_FAULT_KILLS={KILLS}")
    rng = random.Random(seed)
    ledger = tmp_path / "ledger.db"
    create_ledger(ledger)
    kinds = {index: pick_kind(seed, index) for index in range(RUNS)}
    queue = list(range(RUNS))
    submitted: dict[str, int] = {}
    rules = ModelRules(seed)
    began = time.monotonic()
    with OpenAICompatibleServer(rules=rules) as server:
        primary = f"openai:{PRIMARY}@{server.base_url}"
        fleet = FaultFleet(tmp_path, database.url, ledger, seed, server.base_url)
        try:
            async with Corral(database.url) as corral:
                corral.register(clerk)

                async def submit(count: int) -> None:
                    for _ in range(min(count, len(queue))):
                        index = queue.pop(0)
                        key = f"faults-{seed}-{index}"
                        await corral.start(
                            clerk, task_text(index, kinds[index]), idempotency_key=key
                        )
                        submitted[key] = index

                fleet.start()
                await submit(RUNS // 5)
                per_gap = math.ceil(len(queue) / KILLS)
                while fleet.kills < KILLS:
                    await asyncio.sleep(rng.uniform(*KILL_GAP))
                    await submit(per_gap)
                    await fleet.kill_one(rng)
                await submit(len(queue))
                chaos = time.monotonic() - began
                await drain(fleet, database)
                await fleet.stop()
                seen = await observe(corral, database, ledger, submitted, primary)
        finally:
            fleet.close()
        assert not server.rule_errors, server.rule_errors[:3]
    report = check(seen, kinds)
    report.counts["model server"].update(rules.served)
    report.counts["fleet"].update(
        {"kills": fleet.kills, "workers": len(fleet.processes), "runs": len(submitted)}
    )
    summary = (
        f"seed={seed} runs={RUNS} kills={fleet.kills} chaos={chaos:.1f}s "
        f"total={time.monotonic() - began:.1f}s\n{report.summary()}"
    )
    print(summary)
    assert report.ok, summary
    # The suite proves something only if the faults happened: each kind of thing, at least once.
    outcomes = report.counts["outcomes"]
    assert outcomes["succeeded"] > 0, summary
    assert outcomes["failed"] > 0, summary
    assert outcomes["waiting"] > 0, summary
    assert sum(report.counts["retries"].values()) > 0, summary
    assert report.counts["effects"]["duplicates dropped"] > 0, summary
    assert report.counts["effects"]["runs called from two workers"] > 0, summary
    assert report.counts["fallbacks"]["circuit_open"] > 0, summary


# -- the checker, tested on made-up observations: each seeded bug is caught ----------------------

PRIMARY_KEY = "openai:fault-model@http://127.0.0.1:1/v1"
WORKER = "host:4242:abcdef"


def transition(
    n: int, from_state: BreakerState, to_state: BreakerState, at: float, calls: int, failures: int
) -> TransitionRow:
    return TransitionRow(n, WORKER, PRIMARY_KEY, from_state, to_state, at, calls, failures, "")


def healthy() -> tuple[Observed, dict[int, str]]:
    """A fleet where all went well: an order, a question waiting, a runaway stopped, and one
    model step that fell back while the worker's breaker was open."""
    model = json.dumps({"fallbacks": []})
    fell_back = json.dumps({"fallbacks": ["openai:fault-model: circuit_open"]})
    retried = json.dumps({"attempts": [{"attempt": 1, "code": "retry_step", "retry_at": 1.0}]})
    seen = Observed(
        submitted={"k0": 0, "k1": 1, "k2": 2},
        runs=[
            ("r0", "succeeded", None, "k0"),
            ("r1", "waiting", None, "k1"),
            ("r2", "failed", json.dumps({"code": "step_limit"}), "k2"),
        ],
        steps=[
            ("r0", 1, "model:clerk", "succeeded", None, model),
            ("r0", 2, "tool:reserve", "succeeded", retried, '"ok"'),
            ("r0", 3, "model:clerk", "succeeded", None, fell_back),
            ("r1", 1, "model:clerk", "succeeded", None, model),
        ],
        questions=["r1"],
        transitions=[
            transition(1, "closed", "open", 100.0, 6, 4),
            transition(2, "open", "half_open", 101.5, 6, 4),
            transition(3, "half_open", "open", 101.6, 1, 1),
            transition(4, "open", "half_open", 103.0, 1, 1),
            transition(5, "half_open", "closed", 103.1, 2, 0),
        ],
        calls=[
            ("r0:2", "r0", "reserve", "O-0", "lost_response", 4242, 1),
            ("r0:2", "r0", "reserve", "O-0", "ok", 4343, 0),
        ],
        effects=[("r0:2", "r0", "reserve", "O-0")],
        fallbacks=[("r0:3", 4242, 100.5)],
        primary=PRIMARY_KEY,
    )
    return seen, {0: "order", 1: "escalate", 2: "runaway"}


def test_the_checker_passes_a_healthy_fleet_and_counts_what_happened() -> None:
    seen, kinds = healthy()
    report = check(seen, kinds)
    assert report.ok, report.summary()
    assert report.counts["outcomes"] == {"succeeded": 1, "waiting": 1, "failed": 1}
    assert report.counts["retries"] == {"retry_step": 1}
    assert report.counts["effects"]["duplicates dropped"] == 1
    assert report.counts["effects"]["runs called from two workers"] == 1
    assert report.counts["fallbacks"] == {"circuit_open": 1}


def _lose_run(seen: Observed) -> None:
    del seen.runs[0]


def _fail_unnamed(seen: Observed) -> None:
    seen.runs[2] = ("r2", "failed", json.dumps({"code": "exception"}), "k2")


def _fail_unnamed_step(seen: Observed) -> None:
    error = {"code": "step_failed", "error_type": "KeyError"}
    seen.runs[2] = ("r2", "failed", json.dumps(error), "k2")


def _leave_running(seen: Observed) -> None:
    seen.runs[0] = ("r0", "running", None, "k0")


def _forget_question(seen: Observed) -> None:
    seen.questions.clear()


def _ask_twice(seen: Observed) -> None:
    seen.questions.append("r1")


def _apply_under_two_keys(seen: Observed) -> None:
    seen.steps.append(("r0", 4, "tool:reserve", "succeeded", None, '"ok"'))
    seen.effects.append(("r0:4", "r0", "reserve", "O-0"))


def _lose_effect(seen: Observed) -> None:
    seen.effects.clear()


def _skip_a_state(seen: Observed) -> None:
    del seen.transitions[1]


def _half_open_early(seen: Observed) -> None:
    seen.transitions[1] = transition(2, "open", "half_open", 100.2, 6, 4)


def _open_early(seen: Observed) -> None:
    seen.transitions[0] = transition(1, "closed", "open", 100.0, 6, 2)


def _close_early(seen: Observed) -> None:
    seen.transitions[4] = transition(5, "half_open", "closed", 103.1, 1, 0)


def _fall_back_while_closed(seen: Observed) -> None:
    seen.fallbacks[0] = ("r0:3", 4242, 99.0)


def _fall_back_elsewhere(seen: Observed) -> None:
    seen.fallbacks[0] = ("r0:3", 4343, 100.5)


def _never_close(seen: Observed) -> None:
    del seen.transitions[3:]


@pytest.mark.parametrize(
    ("bug", "anomaly"),
    [
        (_lose_run, "lost runs"),
        (_fail_unnamed, "failed without a named cause"),
        (_fail_unnamed_step, "failed without a named cause"),
        (_leave_running, "runs in no definite state"),
        (_forget_question, "waiting without one pending question"),
        (_ask_twice, "waiting without one pending question"),
        (_apply_under_two_keys, "effects applied twice under two keys"),
        (_lose_effect, "succeeded tool steps with no effect"),
        (_skip_a_state, "invalid breaker moves"),
        (_half_open_early, "half-open sooner than open_for"),
        (_open_early, "opened short of the configured failure rate"),
        (_close_early, "closed short of the configured probes"),
        (_fall_back_while_closed, "circuit_open fallbacks while the breaker was closed"),
        (_fall_back_elsewhere, "circuit_open fallbacks while the breaker was closed"),
        (_never_close, "the primary model's breaker never closed again"),
    ],
)
def test_the_checker_catches_a_seeded_bug(bug: Callable[[Observed], None], anomaly: str) -> None:
    seen, kinds = healthy()
    bug(seen)
    found = [name for name, items in check(seen, kinds).anomalies.items() if items]
    assert any(name.startswith(anomaly) for name in found), found
