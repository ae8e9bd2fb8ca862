"""The `corral` command line: start runs, run workers, inspect, signal and cancel runs.

Built with typer and rich on the public engine API; nothing imports this package. The reference
for users is docs/cli.md; `corral --help` and each command's `--help` say the same in short.

Modules, one concept each: `main` (global options, command tree, entry point), `session`
(settings and the `Corral` they open), `app_loading` (`--app`), `exits` (exit codes and error
messages), `inputs` (JSON arguments), `shapes` (`--json` output), `display` (tables), and one
module per command: `start` (run), `waiting` (run --wait), `worker`, `runs`, `signals`,
`workflows`, `db` (schema status and migrations).
"""

from corral.cli.main import app, main

__all__ = ["app", "main"]
