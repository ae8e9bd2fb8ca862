"""The runs a person starts from: top-level runs (those without a parent), newest first.

A ticket of the demo makes five runs (its own and four delegated agents'); the runs page and the
dashboard list the runs people started, and each run's page shows its child runs. The API's
`GET /runs` lists every run; this is the same list (same order, same kind of cursor) without
the child runs.
"""

from __future__ import annotations

from typing import Any

from corral.server.shapes import Page, RunOut
from corral.server.state import ServerState
from corral.store import RunRecord
from corral.store.rows import RUN_COLUMNS, run_from_row
from corral.store.scripts import Script, Statement


def top_level_runs(
    tenant: str,
    *,
    status: str | None = None,
    workflow: str | None = None,
    after: tuple[float, str] | None = None,
    limit: int,
) -> Script[list[RunRecord]]:
    """The tenant's runs that have no parent, newest first (a read script); `after` is the
    `created_at` and `run_id` of the last run of the previous page."""
    where = ["tenant = ?", "parent_run_id IS NULL"]
    params: list[Any] = [tenant]
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if workflow is not None:
        where.append("workflow = ?")
        params.append(workflow)
    if after is not None:
        where.append("(created_at < ? OR (created_at = ? AND run_id < ?))")
        params += [after[0], after[0], after[1]]
    found = yield Statement(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)}"
        " ORDER BY created_at DESC, run_id DESC LIMIT ?",
        (*params, limit),
    )
    return [run_from_row(row) for row in found.rows]


async def top_level_page(
    state: ServerState,
    tenant: str,
    *,
    status: str | None,
    workflow: str | None,
    limit: int,
    cursor: str | None,
) -> Page[RunOut]:
    """One page of top-level runs; `Problem` 400 for a cursor of another list, or expired."""
    scope = f"ui-top-runs|{tenant}|{status}|{workflow}"
    after = None
    if cursor is not None:
        position = state.cursors.read(cursor, scope=scope, now=state.now())
        after = (float(position["t"]), str(position["id"]))
    runs = await state.store.read_script(
        lambda d: top_level_runs(
            tenant, status=status, workflow=workflow, after=after, limit=limit + 1
        )
    )
    next_cursor = None
    if len(runs) > limit:
        runs = runs[:limit]
        last = runs[-1]
        next_cursor = state.cursors.make(
            {"t": last.created_at, "id": last.run_id}, scope=scope, now=state.now()
        )
    return Page[RunOut](items=[RunOut.of(run) for run in runs], next_cursor=next_cursor)


__all__ = ["top_level_page", "top_level_runs"]
