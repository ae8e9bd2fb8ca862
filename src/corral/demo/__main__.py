"""`python -m corral.demo` (what `make demo` runs): the support-fleet tour; `--order` runs the
order tour instead. The same as `corral demo`.

Both use real `corral worker` processes on the default database (./.corral/corral.db), or on
`--database-url` / CORRAL_DATABASE_URL, so you can carry on with `corral runs …` afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys

from corral.store import DEFAULT_DATABASE_URL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.demo", description=__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CORRAL_DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="Where the runs go (default: ./.corral/corral.db, or CORRAL_DATABASE_URL).",
    )
    parser.add_argument(
        "--order", action="store_true", help="Run the order tour (one workflow, no agents)."
    )
    options = parser.parse_args(argv)
    if options.order:
        from corral.demo import order_tour

        return order_tour.main(options.database_url)
    from corral.demo import tour

    return tour.main(options.database_url)


if __name__ == "__main__":
    sys.exit(main())
