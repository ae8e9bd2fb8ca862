"""The JSON shapes of `--json` output: a promise to scripts, pinned by tests/cli/test_cli_json.py.

Keys are never removed or renamed without a major version; new keys may be added. Payloads
(input, result, error, signal data, step detail) are decoded JSON values, not JSON-in-a-string.
Timestamps are ISO 8601 strings in UTC (`2025-01-31T12:00:00.123Z`), or null.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from typing import Any

from corral import Workflow
from corral.governance.redaction import Redactor
from corral.store import RunRecord, SignalRecord, StepRecord


def iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds, `Z` for the zone."""
    if timestamp is None:
        return None
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def output_redactor() -> Redactor:
    """What payloads shown by the CLI are redacted of (CORRAL_REDACT; default: emails, phone
    numbers and card numbers; `none` shows everything)."""
    return _redactor(os.environ.get("CORRAL_REDACT", ""))


@functools.lru_cache(maxsize=8)
def _redactor(setting: str) -> Redactor:
    return Redactor.from_settings({"CORRAL_REDACT": setting})


def decode(text: str | None) -> Any:
    """A stored payload as a JSON value (kept as text in the unlikely case it is not JSON),
    with personal data redacted as CORRAL_REDACT says: every payload the CLI prints goes
    through here."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return output_redactor().redact_json(value)


def run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "workflow_version": run.workflow_version,
        "status": run.status,
        "tenant": run.tenant,
        "input": decode(run.input),
        "result": decode(run.result),
        "error": decode(run.error),
        "idempotency_key": run.idempotency_key,
        "parent_run_id": run.parent_run_id,
        "parent_step_seq": run.parent_step_seq,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "wake_at": iso(run.wake_at),
        "lease_owner": run.lease_owner,
        "lease_expires_at": iso(run.lease_expires_at),
        "lease_epoch": run.lease_epoch,
        "claims": run.claims,
    }


def step_json(step: StepRecord) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "kind": step.kind,
        "name": step.name,
        "status": step.status,
        "idempotency_key": step.idempotency_key,
        "at_most_once": step.at_most_once,
        "result": decode(step.result),
        "error": decode(step.error),
        "detail": decode(step.detail),
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
    }


def child_json(child: RunRecord) -> dict[str, Any]:
    return {
        "run_id": child.run_id,
        "workflow": child.workflow,
        "status": child.status,
        "parent_step_seq": child.parent_step_seq,
    }


def signal_json(signal: SignalRecord) -> dict[str, Any]:
    return {
        "signal_id": signal.signal_id,
        "run_id": signal.run_id,
        "name": signal.name,
        "data": decode(signal.payload),
        "created_at": iso(signal.created_at),
        "consumed_seq": signal.consumed_seq,
    }


def run_detail_json(
    run: RunRecord,
    steps: list[StepRecord],
    children: list[RunRecord],
    signals: list[SignalRecord],
) -> dict[str, Any]:
    """`runs show --json`: the run, its whole journal, its child runs and its signals."""
    return {
        **run_json(run),
        "steps": [step_json(step) for step in steps],
        "children": [child_json(child) for child in children],
        "signals": [signal_json(signal) for signal in signals],
    }


def type_name(type_: Any) -> str:
    """How `corral workflows` names an input or output type."""
    if type_ is None or type_ is Any:  # unannotated: any JSON value
        return "Any"
    if type_ is type(None):
        return "None"
    if isinstance(type_, type):
        return type_.__qualname__
    return repr(type_).replace("typing.", "")


def workflow_json(wf: Workflow[Any, Any]) -> dict[str, Any]:
    return {
        "name": wf.name,
        "version": wf.version,
        "input_type": type_name(wf.input_type),
        "output_type": type_name(wf.output_type),
    }


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
