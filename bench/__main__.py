"""`python -m bench [--quick] [--postgres URL | --no-postgres]`: run the benchmarks, print a table.

The SQLite benchmarks always run. The PostgreSQL ones run when the server answers at `--postgres`
(default: $CORRAL_BENCH_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/test); each uses
a schema of its own, dropped afterwards. The observability benchmarks (`bench/observe_bench.py`)
journal CORRAL_BENCH_STEPS steps (default 100,000; the issue's target is 1,000,000).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys

from bench.agents_bench import run_all as run_all_agents
from bench.engine_bench import Row, run_all
from bench.observe_bench import run_all as run_all_observe
from bench.postgres_bench import DEFAULT_URL, URL_ENV, unreachable
from bench.postgres_bench import run_all as run_all_postgres


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--postgres", metavar="URL", help="the PostgreSQL database to use")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    rows = asyncio.run(run_all(quick=args.quick))
    rows += asyncio.run(run_all_agents(quick=args.quick))
    skipped = ""
    observe_url: str | None = None  # the observability benchmarks' PostgreSQL, when reachable
    if not args.no_postgres:
        url = args.postgres or os.environ.get(URL_ENV) or DEFAULT_URL
        why = asyncio.run(unreachable(url))
        if why is None:
            rows += asyncio.run(run_all_postgres(url, quick=args.quick))
            observe_url = url
        elif args.postgres:
            sys.exit(f"PostgreSQL at {url} is unreachable: {why}")
        else:
            skipped = f"PostgreSQL benchmarks skipped: {url} is unreachable ({why})"
    rows += asyncio.run(run_all_observe(observe_url, quick=args.quick))
    print_table(rows)
    if skipped:
        print(skipped)


def print_table(rows: list[Row]) -> None:
    print(f"Corral benchmarks — {platform.python_implementation()} {platform.python_version()}")
    width = max(len(row.name) for row in rows)
    for row in rows:
        print(f"{row.name:<{width}}  {row.value:>12,.1f} {row.unit:<10} {row.note}")


if __name__ == "__main__":
    main()
