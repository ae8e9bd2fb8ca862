"""Durability suites: named crash points, a kill -9 soak, and a replay property test, on SQLite
and PostgreSQL; chaos with PostgreSQL itself crashed, and claim contention, on a throwaway server.

A package (with relative imports) so that worker subprocesses can run
`python -m durability.worker_process` with `tests/` on their path, and so that mypy and pytest
see the same module names.
"""
