"""Soak: a fleet of worker processes killed with `kill -9` at random moments, then a checker.

Runs of random shapes (3-10 operations, fan-outs, child runs, short timers, signals) are started
while three worker processes execute them; every so often one of them gets SIGKILL and a fresh one
takes its place. Leases are short, so the dead worker's runs are taken over by expiry (nothing is
back-dated here). Once the fleet has drained, a Jepsen-style checker (`effect_ledger.check`)
classifies every run and every effect: lost runs, wrong results, duplicated effects, effects of no
run, journaled steps with no effect, and overlapping executions of one run. All must be zero.

Replay a failure with the printed seed: `CORRAL_SOAK_SEED=<seed>`. Sizes: `CORRAL_SOAK_RUNS`
(default 200), `CORRAL_SOAK_KILLS` (default 40); `CORRAL_SOAK=1` makes both larger.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from typing import Any

import pytest

from corral import Corral

from .durable_shapes import (
    WORKFLOWS,
    Op,
    count_runs,
    durable_shape,
    random_shape,
    root_signals,
    signal_payload,
)
from .harness import Fleet, WorkerProcess, all_settled, drain, stop_cleanly, wrong_results

BIG = bool(os.environ.get("CORRAL_SOAK"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800 if BIG else 300)]
RUNS = int(os.environ.get("CORRAL_SOAK_RUNS", 1000 if BIG else 200))
KILLS = int(os.environ.get("CORRAL_SOAK_KILLS", 150 if BIG else 40))
WORKERS = 3
CONCURRENCY = 8
LEASE_TTL = 1.5
HEARTBEAT = 0.3
TOOL_DELAY = (0.01, 0.1)
KILL_GAP = (0.1, 0.6)
WARM_UP = 1.0
"""A victim has been serving this long: most kills land in a worker that is executing runs."""
DRAIN_TIMEOUT = 120.0 + RUNS * 0.1
STALL = 15.0
"""Seconds without any progress (ten lease lifetimes) after which the fleet is stuck."""


def seed_from_env() -> int:
    text = os.environ.get("CORRAL_SOAK_SEED")
    return int(text) if text else random.SystemRandom().randrange(2**32)


class Chaos:
    """The fleet under test: keeps `WORKERS` processes up, kills and replaces them."""

    def __init__(self, fleet: Fleet, rng: random.Random) -> None:
        self.fleet = fleet
        self.rng = rng
        self.workers: list[WorkerProcess] = [fleet.spawn() for _ in range(WORKERS)]
        self.kills = 0

    def check_alive(self) -> None:
        """No worker may die by itself: that would be a crash of the engine, not ours."""
        for worker in self.workers:
            code = worker.proc.poll()
            assert code is None, (
                f"worker {worker.pid} exited with {code} on its own; its log:\n{worker.tail()}"
            )

    async def kill_one(self) -> bool:
        self.check_alive()
        # Counted from when it serves, not from its spawn: a worker takes a second or two just
        # to import, and one killed then had no run to lose (no kill would interrupt anything).
        warm = [w for w in self.workers if await w.serving_for() >= WARM_UP]
        if not warm:
            return False
        victim = self.rng.choice(warm)
        self.fleet.kill(victim)
        self.workers[self.workers.index(victim)] = self.fleet.spawn()
        self.kills += 1
        return True


async def test_kill_9_soak_loses_and_duplicates_nothing(make_fleet: Any) -> None:
    seed = seed_from_env()
    print(f"soak: CORRAL_SOAK_SEED={seed} CORRAL_SOAK_RUNS={RUNS} CORRAL_SOAK_KILLS={KILLS}")
    rng = random.Random(seed)
    shapes = [random_shape(rng) for _ in range(RUNS)]
    total_runs = sum(count_runs(ops) for ops in shapes)
    fleet: Fleet = make_fleet(
        concurrency=CONCURRENCY,
        lease_ttl=LEASE_TTL,
        heartbeat=HEARTBEAT,
        poll=0.05,
        tool_delay=TOOL_DELAY,
        max_seconds=DRAIN_TIMEOUT + 600,
    )
    started: dict[str, list[Op]] = {}
    queue = list(enumerate(shapes))

    async with Corral(fleet.url, workflows=WORKFLOWS) as corral:

        async def submit(count: int) -> None:
            for _ in range(min(count, len(queue))):
                index, ops = queue.pop(0)
                handle = await corral.start(
                    durable_shape, {"ops": ops}, idempotency_key=f"soak-{seed}-{index}"
                )
                started[handle.run_id] = ops
                for name in root_signals(ops):
                    # Sent before the run waits: a signal is kept until it is taken.
                    await corral.signal(handle.run_id, name, signal_payload(name))

        chaos = Chaos(fleet, rng)
        began = time.monotonic()
        await submit(RUNS // 5)
        per_gap = math.ceil(len(queue) / KILLS)
        while chaos.kills < KILLS:
            await asyncio.sleep(rng.uniform(*KILL_GAP))
            await submit(per_gap)
            await chaos.kill_one()
        await submit(len(queue))
        chaos_seconds = time.monotonic() - began

        await drain(
            fleet,
            fleet.database,
            settled=lambda: all_settled(corral),
            check_alive=chaos.check_alive,
            timeout=DRAIN_TIMEOUT,
            stall=STALL,
            seed=seed,
            detail=lambda: f"; leases last {LEASE_TTL}s",
        )
        drain_seconds = time.monotonic() - began - chaos_seconds
        await stop_cleanly(fleet, chaos.workers)
        wrong = await wrong_results(corral, started)

    report = fleet.check()
    summary = (
        f"backend={fleet.database.backend} seed={seed} roots={len(started)} kills={chaos.kills} "
        f"chaos={chaos_seconds:.1f}s drain={drain_seconds:.1f}s wrong_results={len(wrong)}\n"
        f"{report.summary()}"
    )
    print(summary)
    assert report.runs == total_runs, summary
    assert not wrong, f"{summary}\nwrong results: {wrong[:3]}"
    assert report.ok, summary
    # The soak means something only if kills interrupted work and runs changed hands.
    assert report.interrupted_executions > 0, summary
    assert report.takeovers > 0, summary
