"""`python -m bench.worker_process URL [options]`: one Corral worker process for the benchmarks.

It opens the store, prints `ready` and (with `--wait-for-go`) waits for a line on stdin before
it starts claiming, so that the parent times the work and not the interpreter's start-up. When
the worker returns it prints one JSON line with its statistics (runs claimed, outcomes, group
commits, CPU seconds) so the parent can report writes per commit and how busy it was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from corral import Corral


async def serve(args: argparse.Namespace) -> dict[str, object]:
    corral = Corral(
        args.url,
        lease_ttl=args.lease_ttl,
        heartbeat_interval=args.heartbeat,
        poll_interval=args.poll_interval,
    )
    async with corral:
        worker = corral.worker(concurrency=args.concurrency)
        print("ready", flush=True)
        if args.wait_for_go:
            await asyncio.to_thread(sys.stdin.readline)
        cpu_before = time.process_time()
        stats = await worker.run(until_idle=args.until_idle)
        cpu = time.process_time() - cpu_before
        batches, operations = corral.store.group_commit_stats  # type: ignore[attr-defined]
    return {
        "claimed": stats.claimed,
        "outcomes": stats.outcomes,
        "batches": batches,
        "operations": operations,
        "cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_process", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lease-ttl", type=float, default=30.0)
    parser.add_argument("--heartbeat", type=float, default=None)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--until-idle", action="store_true", help="return when nothing runnable")
    parser.add_argument("--wait-for-go", action="store_true", help="start on a line on stdin")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(serve(args))), flush=True)


if __name__ == "__main__":
    main()
