"""Golden journals: export a finished run to JSON, import it back as a run ready to resume.

The fixtures in `tests/fixtures/golden/` were recorded with `export_run`; re-record them with

    CORRAL_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/engine/test_golden.py

and review the diff before committing it: a golden journal that changes is a journal that old runs
can no longer replay. Imports go through the store protocol only (create, claim, journal writes,
signals, release), so they work on every backend, and payloads stay the exact JSON text that was
stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from corral.store import NewRun, StepWrite, Store

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "golden"
REGENERATE_ENV = "CORRAL_REGENERATE_GOLDEN"
FORMAT = 1

_IMPORTER = "golden-import"
_RUN_FIELDS = (
    "run_id",
    "tenant",
    "workflow",
    "workflow_version",
    "status",
    "input",
    "result",
    "error",
    "parent_run_id",
    "parent_step_seq",
    "created_at",
)
_STEP_FIELDS = (
    "seq",
    "kind",
    "name",
    "status",
    "at_most_once",
    "detail",
    "result",
    "error",
    "started_at",
    "finished_at",
)


def regenerating() -> bool:
    return os.environ.get(REGENERATE_ENV) == "1"


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"


def read_golden(name: str) -> dict[str, Any]:
    path = golden_path(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; record it with {REGENERATE_ENV}=1")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == FORMAT, f"{path}: golden format {data['format']}, expected {FORMAT}"
    return data


def write_golden(name: str, data: dict[str, Any]) -> None:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    golden_path(name).write_text(text, encoding="utf-8")


async def export_run(store: Store, run_id: str) -> dict[str, Any]:
    """A run, its journal, its signals and (recursively) its child runs, as JSON-ready data."""
    run = await store.get_run(run_id)
    assert run is not None, f"no run {run_id}"
    children = await store.list_runs(parent_run_id=run_id, limit=10_000)
    children.sort(key=lambda child: child.parent_step_seq or 0)
    return {
        "format": FORMAT,
        "run": {name: getattr(run, name) for name in _RUN_FIELDS},
        "steps": [
            {name: getattr(step, name) for name in _STEP_FIELDS}
            for step in await store.load_journal(run_id)
        ],
        "signals": [
            {
                "name": signal.name,
                "payload": signal.payload,
                "created_at": signal.created_at,
                "consumed_seq": signal.consumed_seq,
            }
            for signal in await store.list_signals(run_id)
        ],
        "children": [await export_run(store, child.run_id) for child in children],
    }


async def import_run(store: Store, data: dict[str, Any], *, now: float) -> str:
    """Recreate an exported run in `store` with its journal intact, set back to `pending`.

    Child runs are recreated as they finished. Call it on a store with no other runnable run:
    the import claims runs like a worker does, to write their journals under a lease.
    """
    run = data["run"]
    await store.create_run(_new_run(run))
    epoch = await _claim(store, run["run_id"], now)
    await _import_journal(store, data, epoch, now)
    await store.release_run(run["run_id"], epoch, wake_at=now, now=now)
    return str(run["run_id"])


def _new_run(run: dict[str, Any]) -> NewRun:
    return NewRun(
        run_id=run["run_id"],
        workflow=run["workflow"],
        workflow_version=run["workflow_version"],
        input=run["input"],
        created_at=run["created_at"],
        tenant=run["tenant"],
        parent_run_id=run["parent_run_id"],
        parent_step_seq=run["parent_step_seq"],
    )


async def _claim(store: Store, run_id: str, now: float) -> int:
    claimed = await store.claim_runs(worker_id=_IMPORTER, limit=1, now=now, lease_ttl=3600)
    assert [run.run_id for run in claimed] == [run_id], "import into a store with no runnable run"
    return claimed[0].lease_epoch


async def _import_journal(store: Store, data: dict[str, Any], epoch: int, now: float) -> None:
    run_id = data["run"]["run_id"]
    children = {child["run"]["parent_step_seq"]: child for child in data["children"]}
    # Signals go in first, in the order they were sent; signal steps consume them in that order.
    for signal in data["signals"]:
        await store.send_signal(run_id, signal["name"], signal["payload"], now=now)
    for step in data["steps"]:
        write = StepWrite(
            run_id=run_id,
            epoch=epoch,
            seq=step["seq"],
            kind=step["kind"],
            name=step["name"],
            status=step["status"],
            at=now,
            at_most_once=step["at_most_once"],
            detail=step["detail"],
            result=step["result"],
            error=step["error"],
        )
        if step["status"] == "started":
            await store.write_step(write)
        elif step["kind"] == "child.start" and step["status"] == "succeeded":
            child = children.pop(step["seq"])
            await store.start_child(write, _new_run(child["run"]))
            await _import_finished_child(store, child, now)
        elif step["kind"] == "signal" and step["status"] == "succeeded":
            signal = await store.take_signal(write, signal_name=step["name"])
            assert signal is not None, (
                f"no signal {step['name']!r} to consume at step {step['seq']}"
            )
            assert signal.payload == step["result"], step
        else:
            await store.write_step(write)
    assert not children, f"child runs without a child.start step: {sorted(children)}"


async def _import_finished_child(store: Store, data: dict[str, Any], now: float) -> None:
    run = data["run"]
    assert run["status"] in ("succeeded", "failed", "cancelled"), run
    epoch = await _claim(store, run["run_id"], now)
    await _import_journal(store, data, epoch, now)
    await store.finish_run(
        run["run_id"],
        epoch,
        status=run["status"],
        result=run["result"],
        error=run["error"],
        now=now,
    )
