"""A worker process for the durability suites: `python -m durability.worker_process DB_URL ...`.

It knows every shape of `durable_shapes`, points its tools at the effect ledger, and executes runs
until SIGTERM (a graceful `worker.stop()`), until idle with `--until-idle`, or until
`--max-seconds` pass (exit code 3, so a stuck worker fails its test instead of hanging it). It
does not depend on the `corral` CLI. Arm a crash point with the environment variable
`CORRAL_CRASH_AT`; the suites also kill it with a real SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
from pathlib import Path

from corral import Corral

from . import durable_shapes, effect_ledger

EXIT_TIMED_OUT = 3
READY = "worker ready"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="durability.worker_process")
    parser.add_argument("database_url")
    parser.add_argument("--ledger", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lease-ttl", type=float, default=30.0)
    parser.add_argument("--heartbeat", type=float, default=None)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--tool-delay", type=float, nargs=2, default=None)
    parser.add_argument("--until-idle", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    return parser.parse_args(argv)


def dump_tasks() -> None:
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


async def serve(args: argparse.Namespace) -> int:
    corral = Corral(
        args.database_url,
        workflows=durable_shapes.WORKFLOWS,
        lease_ttl=args.lease_ttl,
        heartbeat_interval=args.heartbeat,
        poll_interval=args.poll,
    )
    timed_out = False
    async with corral:
        worker = corral.worker(concurrency=args.concurrency)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
        parent = os.getppid()

        async def watchdog() -> None:
            # Stop when the time is up or the test process that started us is gone.
            nonlocal timed_out
            deadline = loop.time() + args.max_seconds
            while True:
                if loop.time() >= deadline or os.getppid() != parent:
                    break
                await asyncio.sleep(0.2)
            timed_out = True
            worker.stop()

        guard = asyncio.create_task(watchdog())
        print(READY, flush=True)  # SIGTERM is handled from here on
        try:
            stats = await worker.run(until_idle=args.until_idle, grace=5.0)
        finally:
            guard.cancel()
    print(json.dumps({"pid": os.getpid(), "claimed": stats.claimed, "outcomes": stats.outcomes}))
    return EXIT_TIMED_OUT if timed_out else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # A test that gives up on this worker first sends SIGUSR2 (thread stacks, even with the loop
    # blocked) and SIGUSR1 (every asyncio task's stack): the log then shows where it hung.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    effect_ledger.configure(args.ledger)
    if args.tool_delay is not None:
        durable_shapes.hooks.delay = (args.tool_delay[0], args.tool_delay[1])
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
