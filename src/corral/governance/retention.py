"""Redacting stored payloads: personal data removed from the runs that no longer need it.

Payloads (inputs, results, step results, signals) live in the journal, apart from the audit log,
which holds decisions only; so payloads can be redacted without breaking the audit chain. A run
replays its payloads while it is unfinished, so only finished runs are redacted: their journal
is a record from then on, not an input to code. Each redaction is itself audited
(`payload.redacted`, with how many payloads changed, never what they held).
"""

from __future__ import annotations

import json
from typing import Any

from corral.errors import RunNotFound, UsageError
from corral.governance.audit import AuditEntry, append
from corral.governance.redaction import Redactor
from corral.store.records import FINISHED_STATUSES
from corral.store.scripts import Dialect, Script, Statement


def redact_payload(redactor: Redactor, text: str | None) -> str | None:
    """A stored payload with personal data replaced (JSON stays JSON)."""
    if text is None:
        return None
    try:
        value: Any = json.loads(text)
    except ValueError:
        return redactor.redact_text(text)
    return json.dumps(redactor.redact_json(value), ensure_ascii=False)


def redact_run(
    run_id: str, redactor: Redactor, *, actor: str, now: float, dialect: Dialect
) -> Script[int]:
    """Redact a finished run's stored payloads in place; the number of payloads changed."""
    found = yield Statement(
        "SELECT tenant, status, input, result, error FROM runs WHERE run_id = ?", (run_id,)
    )
    row = found.one()
    if row is None:
        raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
    tenant, status, *run_payloads = row
    if status not in FINISHED_STATUSES:
        raise UsageError(
            f"run {run_id} is {status}: only finished runs are redacted (an unfinished run "
            "replays its stored payloads)",
            run_id=run_id,
            status=status,
        )
    changed = 0
    new_run = [redact_payload(redactor, text) for text in run_payloads]
    if new_run != run_payloads:
        changed += sum(a != b for a, b in zip(new_run, run_payloads, strict=True))
        yield Statement(
            "UPDATE runs SET input = ?, result = ?, error = ? WHERE run_id = ?",
            (*new_run, run_id),
        )
    steps = yield Statement(
        "SELECT seq, result, error, detail FROM steps WHERE run_id = ?", (run_id,)
    )
    updates = []
    for seq, *payloads in steps.rows:
        redacted = [redact_payload(redactor, text) for text in payloads]
        if redacted != payloads:
            changed += sum(a != b for a, b in zip(redacted, payloads, strict=True))
            updates.append((*redacted, run_id, seq))
    if updates:
        yield Statement(
            "UPDATE steps SET result = ?, error = ?, detail = ? WHERE run_id = ? AND seq = ?",
            updates,
            many=True,
        )
    signals = yield Statement("SELECT signal_id, payload FROM signals WHERE run_id = ?", (run_id,))
    signal_updates = []
    for signal_id, payload in signals.rows:
        redacted_payload = redact_payload(redactor, payload)
        if redacted_payload != payload:
            changed += 1
            signal_updates.append((redacted_payload, signal_id))
    if signal_updates:
        yield Statement(
            "UPDATE signals SET payload = ? WHERE signal_id = ?", signal_updates, many=True
        )
    yield from append(
        tenant,
        AuditEntry(
            kind="payload.redacted",
            actor=actor,
            subject=f"run:{run_id}",
            decision={"kinds": list(redactor.kinds), "payloads_changed": changed},
        ),
        at=now,
        dialect=dialect,
    )
    return changed


def finished_runs(tenant: str, *, before: float) -> Script[list[str]]:
    """Ids of the tenant's finished runs last updated before `before`."""
    marks = ", ".join("?" for _ in FINISHED_STATUSES)
    result = yield Statement(
        f"SELECT run_id FROM runs WHERE tenant = ? AND status IN ({marks}) AND updated_at < ?"
        " ORDER BY updated_at",
        (tenant, *sorted(FINISHED_STATUSES), before),
    )
    return [row[0] for row in result.rows]
