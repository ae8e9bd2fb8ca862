"""`python -m bench [--quick]`: run the benchmark suite and print a table."""

from __future__ import annotations

import argparse
import asyncio
import platform

from bench.engine_bench import run_all


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    rows = asyncio.run(run_all(quick=args.quick))
    print(f"Corral benchmarks — {platform.python_implementation()} {platform.python_version()}")
    width = max(len(row.name) for row in rows)
    for row in rows:
        print(f"{row.name:<{width}}  {row.value:>12,.1f} {row.unit:<10} {row.note}")


if __name__ == "__main__":
    main()
